"""FIM works, measured: a model trained with FIM fills a masked middle from its suffix; without FIM it cannot.

`codefoundry.train.fim_probe`: templated classes whose masked line names a field that only the
suffix mentions; 100 held-out classes with field names never seen in training; PSM prompts,
greedy decoding through codefoundry.generate, exact match on the stripped middle line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codefoundry.errors import UserError
from codefoundry.train import TrainConfig
from codefoundry.train.fim_probe import compare, document, split_documents
from codefoundry.train.loop import build_model


def test_probe_middle_is_implied_only_by_the_suffix() -> None:
    train_docs, held_out = split_documents()
    seen = {d[1] for d in train_docs}
    assert len(held_out) == 100 and not seen & {d[1] for d in held_out}
    prefix, middle, suffix = document("BlueLedger", "price_limit")
    assert "price_limit" in middle and "price_limit" not in prefix and middle in suffix


def test_model_overrides_shape_the_preset() -> None:
    model, config, _ = build_model(TrainConfig(preset="tiny", model_overrides={"n_layer": 3, "n_embd": 96}), 512)
    assert (config.n_layer, config.n_embd, len(model.transformer.h)) == (3, 96, 3)
    with pytest.raises(UserError, match="n_layers"):
        build_model(TrainConfig(preset="tiny", model_overrides={"n_layers": 3}), 512)


@pytest.mark.slow
def test_fim_exact_match_far_above_no_fim(tmp_path: Path) -> None:
    em = compare(tmp_path, steps=1000)
    print(f"FIM exact match on 100 held-out classes after 1000 steps: with FIM {em['fim']:.2f}, "
          f"without FIM {em['no_fim']:.2f}")
    assert em["fim"] >= em["no_fim"] + 0.5
