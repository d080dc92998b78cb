"""Fixtures of provenance: a real family of artifacts whose lineage the tests check.

    clean        tiny_dataset (curated, decontaminated against HumanEval, HumanEval-infilling, MBPP)
    raw          one more repository (rawfolk/raw-corner: getopt.py, tabnanny.py), curated without
                 decontamination, with an opt-out list applied
    base         pretrained 2 steps on clean          other        pretrained 2 steps on raw
    ft           LoRA over base, fine-tuned on raw    other_ft     LoRA over other, fine-tuned on clean
    merged       base + ft merged into one model

All are made by the stages themselves (curate, train, finetune, merge), built once per session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import MIT_LICENSE, make_git_repo, stdlib_files

PROVENANCE_OPT_OUT = "# left out on request\nnobody-here/anything\n"


def _build(tiny_repos: Path, clean: Path, tokenizer: Path) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        from codefoundry.data import CurateConfig, curate
        from codefoundry.data.decontam import DecontamConfig
        from codefoundry.data.optout import OptOutConfig
        from codefoundry.finetune import FinetuneConfig, LoraSettings, finetune, merge
        from codefoundry.train import PackConfig, TrainConfig, train

        (root / "opt-out.txt").write_text(PROVENANCE_OPT_OUT)
        repo = make_git_repo(root / "raw-repos" / "raw-corner", {"LICENSE": MIT_LICENSE,
                                                                 **stdlib_files("getopt.py", "tabnanny.py")},
                             remote="https://github.com/rawfolk/raw-corner.git")
        curate([str(repo.parent)], root / "raw",
               CurateConfig(workers=1, decontamination=DecontamConfig(enabled=False),
                            opt_out=OptOutConfig(file=root / "opt-out.txt")))
        pretrain = TrainConfig(preset="tiny", seq_len=64, micro_batch_size=2, max_steps=2, eval_interval=2,
                               eval_batches=1, warmup_steps=1, pack=PackConfig(validation_fraction=0.2, workers=1))
        train(root / "base", tokenizer, dataset=clean, config=pretrain)
        train(root / "other", tokenizer, dataset=root / "raw", config=pretrain)
        tune = FinetuneConfig(seq_len=64, micro_batch_size=2, grad_accum=1, max_steps=2, eval_interval=2,
                              checkpoint_interval=2, device="cpu", lora=LoraSettings(r=4, alpha=8, dropout=0.0))
        finetune(root / "base", root / "raw", root / "ft", tune)
        finetune(root / "other", clean, root / "other_ft", tune)
        merge(root / "base", root / "ft", root / "merged")
    return build


@pytest.fixture(scope="session")
def provenance_family(build_once: Callable[[str, Callable[[Path], None]], Path], tiny_repos: Path,
                      tiny_dataset: Path, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    root = build_once("provenance_family", _build(tiny_repos, tiny_dataset, tiny_tokenizer_dir))
    names = ("raw", "base", "other", "ft", "other_ft", "merged")
    return {"clean": tiny_dataset, "tokenizer": tiny_tokenizer_dir, "opt_out": root / "opt-out.txt",
            **{n: root / n for n in names}}
