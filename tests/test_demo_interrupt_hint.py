"""Ctrl-C in a training stage names the command that resumes it: `--resume` alone, the demo inside `codefoundry demo`.

The demo's pretrain and fine-tune stages resume when the same `codefoundry demo` command is run
again (it passes --resume itself, with flags of its own choosing); telling a demo user to "rerun
with --resume" sends them to a flag `codefoundry demo` does not have.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from codefoundry.manifest import write_manifest
from conftest import interrupt_after_steps

INTERRUPTED = "interrupted at step"


def _said(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records if INTERRUPTED in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    caplog.clear()
    return lines[0]


def test_pretraining_interrupted_in_the_demo_or_alone(tmp_path: Path, train_dataset_dir: Path,
                                                       train_tokenizer_dir: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from codefoundry.train import TrainConfig, train
    from codefoundry.train.demo import run_demo_stage

    caplog.set_level(logging.WARNING)
    out = tmp_path / "demo-out"
    shutil.copytree(train_dataset_dir, out / "dataset")
    shutil.copytree(train_tokenizer_dir, out / "tokenizer")
    with pytest.raises(KeyboardInterrupt):
        interrupt_after_steps(1, lambda: run_demo_stage(out, 60, 1, 0))
    said = _said(caplog)
    assert "codefoundry demo" in said and "--resume" not in said, said
    assert json.loads((out / "model" / "checkpoints" / "latest.json").read_text())["step"] == 1

    # `codefoundry train` itself: its own flag
    config = TrainConfig(preset="tiny", seq_len=64, micro_batch_size=2, max_steps=3, checkpoint_interval=10,
                         eval_interval=10, eval_batches=1)
    with pytest.raises(KeyboardInterrupt):
        interrupt_after_steps(1, lambda: train(tmp_path / "alone", train_tokenizer_dir,
                                               dataset=train_dataset_dir, config=config))
    said = _said(caplog)
    assert "rerun with --resume" in said and "demo" not in said, said


def test_fine_tuning_interrupted_in_the_demo(tmp_path: Path, train_dataset_dir: Path, train_tokenizer_dir: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    from codefoundry.finetune.demo import run_finetune
    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
    from codefoundry.tokenizer import load_tokenizer

    caplog.set_level(logging.WARNING)
    out = tmp_path / "demo-out"
    shutil.copytree(train_dataset_dir, out / "dataset")
    torch.manual_seed(0)
    vocab = len(load_tokenizer(train_tokenizer_dir))
    save_pretrained(GPTBigCodeForCausalLM(preset("tiny", vocab_size=vocab).replace(n_positions=512)), out / "base",
                    tokenizer_dir=train_tokenizer_dir)
    if not (out / "base" / "manifest.json").exists():
        write_manifest(out / "base", "model", {"preset": "tiny"}, seed=0)
    with pytest.raises(KeyboardInterrupt):
        interrupt_after_steps(1, lambda: run_finetune(out, 60, 0))
    said = _said(caplog)
    assert "codefoundry demo" in said and "--resume" not in said, said
