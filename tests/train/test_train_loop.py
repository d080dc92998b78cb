"""The training loop end to end on a tiny model: loss goes down, resume is exact, the artifact opens in HF."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from codefoundry.errors import ArtifactError, UserError
from codefoundry.manifest import read_manifest, verify_inputs
from codefoundry.train import PackConfig, TrainConfig, flops_per_token, lr_at, pack, train
from codefoundry.train.checkpoint import latest_step, load_checkpoint

TINY = dict(preset="tiny", seq_len=64, micro_batch_size=4, eval_interval=10, eval_batches=2, lr=3e-3, warmup_steps=3)


@pytest.fixture(scope="module")
def tokens(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack(train_dataset_dir, train_tokenizer_dir, tmp_path_factory.mktemp("tokens"),
                PackConfig(validation_fraction=0.34, workers=1))


@pytest.fixture(scope="module")
def trained(tokens: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "model"
    return train(out, train_tokenizer_dir, tokens=tokens, config=TrainConfig(**TINY, max_steps=40))


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_loss_decreases(trained: Path) -> None:
    losses = _losses(trained)
    assert sorted(losses) == list(range(1, 41))
    first, last = losses[1], sum(losses[i] for i in range(36, 41)) / 5
    print(f"tiny model, 40 steps: loss {first:.3f} → {last:.3f}")
    assert last < first - 0.7
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in records if r.get("val_loss") is not None]
    assert len(vals) == 4 and vals[-1] < vals[0]
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 and r["lr"] > 0 for r in records)
    assert (trained / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_artifact_opens_in_transformers_with_lineage(trained: Path, train_tokenizer_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codefoundry.model import load_model

    tok = AutoTokenizer.from_pretrained(str(trained))
    hf = AutoModelForCausalLM.from_pretrained(str(trained)).eval()
    ours = load_model(trained).eval()
    ids = torch.tensor([tok.encode("def add(a, b):\n    return a + b\n")])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)
    manifest = read_manifest(trained, kind="model")
    assert set(manifest.inputs) >= {"dataset", "tokenizer", "tokens"}
    assert all(verify_inputs(trained).values())
    front, body = (trained / "README.md").read_text().split("---\n", 2)[1:]
    meta = yaml.safe_load(front)
    assert meta["model-index"] == [{"name": "model", "results": []}]
    assert meta["license"] and meta["datasets"] and meta["codefoundry"]["training"]["fim_rate"] == 0.5
    assert {e["kind"] for e in meta["codefoundry"]["lineage"]} == {"dataset", "tokenizer", "tokens"}
    assert "AutoModelForCausalLM" in body


def test_model_card_describes_the_saved_config(trained: Path) -> None:
    """The card's size line comes from the config.json written beside the weights (no model-config method)."""
    hf = json.loads((trained / "config.json").read_text())
    body = (trained / "README.md").read_text().split("---\n", 2)[2]
    assert f"{hf['n_layer']} layers, width {hf['n_embd']}, {hf['n_positions']} positions" in body


def test_resume_continues_the_loss_trajectory_exactly(tokens: Path, train_tokenizer_dir: Path,
                                                      tmp_path: Path) -> None:
    cfg = dict(TINY, decay_steps=8, checkpoint_interval=3, dropout=0.1)  # dropout: the RNG must be restored too
    straight = train(tmp_path / "a", train_tokenizer_dir, tokens=tokens, config=TrainConfig(**cfg, max_steps=8))
    stopped = tmp_path / "b"
    with pytest.raises(UserError, match="already holds a trained model"):
        train(straight, train_tokenizer_dir, tokens=tokens, config=TrainConfig(**cfg, max_steps=8))
    train(stopped, train_tokenizer_dir, tokens=tokens, config=TrainConfig(**cfg, max_steps=5))
    assert latest_step(stopped) == 5
    state = load_checkpoint(stopped)
    assert state["step"] == 5 and state["decay_steps"] == 8 and "rng" in state and state["optimizer"]["state"]
    (stopped / "manifest.json").unlink()  # as if the process had been killed after its step-5 checkpoint
    train(stopped, train_tokenizer_dir, tokens=tokens, config=TrainConfig(**cfg, max_steps=8), resume=True)
    a, b = _losses(straight), _losses(stopped)
    assert sorted(b) == list(range(1, 9))
    assert [b[s] for s in range(6, 9)] == [a[s] for s in range(6, 9)]  # bit-identical on CPU
    print("straight:", [round(a[s], 6) for s in range(1, 9)], "\nresumed: ", [round(b[s], 6) for s in range(1, 9)])


def test_bad_inputs(tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from fixtures_train import write_tokenizer

    other = write_tokenizer(tmp_path / "tok700", vocab_size=700)
    with pytest.raises(ArtifactError, match="600-token vocabulary, but the tokenizer has 700"):
        train(tmp_path / "m1", other, tokens=tokens, config=TrainConfig(**TINY, max_steps=1))
    with pytest.raises(UserError, match="seq_len 4096 is longer than the tiny preset's"):
        train(tmp_path / "m2", train_tokenizer_dir, tokens=tokens,
              config=TrainConfig(**{**TINY, "seq_len": 4096}, max_steps=1))
    with pytest.raises(UserError, match="not a multiple of seq_len"):
        train(tmp_path / "m3", train_tokenizer_dir, tokens=tokens,
              config=TrainConfig(**TINY, max_steps=1, batch_tokens=1000))
    with pytest.raises(UserError, match="exactly one of --dataset or --tokens"):
        train(tmp_path / "m4", train_tokenizer_dir, config=TrainConfig(**TINY))


def test_schedule_and_flops() -> None:
    lrs = [lr_at(s, 3e-4, 3e-5, 10, 100) for s in range(120)]
    assert lrs[0] == pytest.approx(3e-5) and lrs[9] == pytest.approx(3e-4)
    assert lrs[55] == pytest.approx(3e-5 + 0.5 * (3e-4 - 3e-5))  # halfway through the cosine
    assert lrs[100:] == [3e-5] * 20
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    # nanoGPT's estimate for GPT-2 124M at T=1024: 6N + 12·L·D·T
    assert flops_per_token(124_000_000, 12, 768, 1024) == pytest.approx(6 * 124e6 + 12 * 12 * 768 * 1024)
    assert math.isclose(flops_per_token(0, 1, 1, 1), 12.0)


def test_activation_checkpointing_and_time_budget(tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    cfg = dict(TINY, max_steps=3, decay_steps=3)
    plain = train(tmp_path / "plain", train_tokenizer_dir, tokens=tokens, config=TrainConfig(**cfg))
    recomputed = train(tmp_path / "ac", train_tokenizer_dir, tokens=tokens,
                       config=TrainConfig(**cfg, activation_checkpointing=True))
    assert _losses(recomputed) == pytest.approx(_losses(plain), rel=1e-6)
    timed = train(tmp_path / "timed", train_tokenizer_dir, tokens=tokens,
                  config=TrainConfig(**{**TINY, "warmup_steps": None}, max_time=1.5))
    records = [json.loads(line) for line in (timed / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["elapsed_s"] >= 1.5 and records[-1]["val_loss"] is not None
    # the cosine horizon was estimated from the first step's time and recorded for --resume
    assert load_checkpoint(timed)["decay_steps"] >= 2
