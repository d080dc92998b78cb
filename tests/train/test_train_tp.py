"""Tensor parallelism on CPU (gloo, 2 processes): the 1-process loss trajectory, and checkpoints in
the 1-process layout (loadable by transformers, resumable at --tp 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train_ddp import FLAGS, torchrun

from codefoundry.train import PackConfig, TrainConfig, pack, train

TP_FLAGS = {**FLAGS, "micro_batch_size": 8}      # one micro-batch of the whole global batch on every process


@pytest.fixture(scope="module")
def tokens(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack(train_dataset_dir, train_tokenizer_dir, tmp_path_factory.mktemp("tokens"), PackConfig(workers=1))


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("multi_query", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["mqa", "mha"])
def test_tp2_matches_one_process_and_resumes_at_tp1(multi_query: bool, tokens: Path, train_tokenizer_dir: Path,
                                                    tmp_path: Path) -> None:
    overrides = {} if multi_query else {"multi_query": False}
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model_overrides": overrides, "checkpoint_interval": 2, "decay_steps": 4}))
    single = train(tmp_path / "one", train_tokenizer_dir, tokens=tokens,
                   config=TrainConfig(**TP_FLAGS, model_overrides=overrides, checkpoint_interval=2, decay_steps=4))
    flags = {**TP_FLAGS, "max_steps": 2}
    proc = torchrun(tmp_path / "tp", tokens, train_tokenizer_dir, "--tp", "2", "--config", str(config_file),
                    flags=flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, tp = _losses(single), _losses(tmp_path / "tp")
    print(f"1 process: {one}\n--tp 2: {tp}")
    assert tp == pytest.approx(one[:2], rel=1e-4, abs=1e-5)

    # the --tp 2 model directory is an ordinary one: transformers loads it and agrees with our forward
    from transformers import AutoModelForCausalLM

    from codefoundry.model import load_model

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "tp", dtype=torch.float64).eval()
    ours = load_model(tmp_path / "tp", dtype=torch.float64)
    ids = torch.randint(0, ours.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids), atol=1e-9)

    # its checkpoint (step 2) resumes in one process and continues the 1-process run's trajectory
    train(tmp_path / "tp", train_tokenizer_dir, tokens=tokens, resume=True,
          config=TrainConfig(**TP_FLAGS, model_overrides=overrides, checkpoint_interval=2, decay_steps=4))
    assert len(_losses(tmp_path / "tp")) == 4
    assert _losses(tmp_path / "tp")[2:] == pytest.approx(one[2:], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_tp_refuses_what_it_cannot_split(tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    proc = torchrun(tmp_path / "tp3", tokens, train_tokenizer_dir, "--tp", "3", flags=TP_FLAGS)
    assert proc.returncode != 0
    assert "error: --tp 3 needs a multiple of 3 processes" in proc.stderr     # our one line (torchrun adds its own)
    assert "internal error" not in proc.stderr


def test_pp2_matches_one_process_and_resumes_at_pp1(tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 2 micro-batches of 4 per step: accumulated in one process, pipelined (1F1B) over 2 stages
    single = train(tmp_path / "one", train_tokenizer_dir, tokens=tokens,
                   config=TrainConfig(**FLAGS, checkpoint_interval=2, decay_steps=4, eval_interval=2))
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"checkpoint_interval": 2, "decay_steps": 4, "eval_interval": 2}))
    proc = torchrun(tmp_path / "pp", tokens, train_tokenizer_dir, "--pp", "2", "--config", str(config_file),
                    flags={**FLAGS, "max_steps": 2})
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, pp = _losses(single), _losses(tmp_path / "pp")
    print(f"1 process: {one}\n--pp 2: {pp}")
    assert pp == pytest.approx(one[:2], rel=1e-4, abs=1e-5)
    val_one = [json.loads(line).get("val_loss") for line in (single / "metrics.jsonl").read_text().splitlines()]
    val_pp = [json.loads(line).get("val_loss") for line in (tmp_path / "pp" / "metrics.jsonl").read_text().splitlines()]
    assert val_pp[1] == pytest.approx(val_one[1], rel=1e-4)

    train(tmp_path / "pp", train_tokenizer_dir, tokens=tokens, resume=True,
          config=TrainConfig(**FLAGS, checkpoint_interval=2, decay_steps=4, eval_interval=2))
    assert _losses(tmp_path / "pp")[2:] == pytest.approx(one[2:], rel=1e-4, abs=1e-5)
