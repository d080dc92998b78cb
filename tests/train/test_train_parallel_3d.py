"""Tensor and pipeline parallelism in one run (a `pp × tp` mesh) and FSDP2 on the data-parallel axis (alone or
beside --tp), on CPU with gloo: each follows the 1-process loss trajectory of the same global batch, writes a
model directory transformers loads, and its checkpoint resumes in one process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from test_train_ddp import FLAGS
from test_train_tp_layouts import RUN as LAYOUTS_RUN
from test_train_tp_layouts import torchrun as layouts_torchrun

from codefoundry.train import PackConfig, TrainConfig, pack, train


@pytest.fixture(scope="module")
def tokens(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack(train_dataset_dir, train_tokenizer_dir, tmp_path_factory.mktemp("tokens"), PackConfig(workers=1))


RUN = {**LAYOUTS_RUN, "eval_interval": 2}            # a validation loss at step 2 too


@pytest.fixture(scope="module")
def reference(tokens: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference run: 4 steps of 8 sequences (2 accumulated micro-batches of 4) in one process."""
    out = tmp_path_factory.mktemp("one")
    train(out, train_tokenizer_dir, tokens=tokens, config=TrainConfig(**FLAGS, **RUN))
    return out


def _losses(run: Path, key: str = "loss") -> list[float | None]:
    return [json.loads(line).get(key) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _max_diff(a: list, b: list) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def torchrun(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return layouts_torchrun(*args, run=RUN, **kwargs)


def _loads_in_transformers(run: Path) -> None:
    from transformers import AutoModelForCausalLM

    from codefoundry.model import load_model

    hf = AutoModelForCausalLM.from_pretrained(run, dtype=torch.float64).eval()
    ours = load_model(run, dtype=torch.float64)
    ids = torch.randint(0, ours.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids), atol=1e-9)


def _resumes_in_one_process(run: Path, one_process: list[float], tokens: Path, tokenizer: Path) -> None:
    """The run's step-2 checkpoint continues the 1-process trajectory in one process (steps 3 and 4)."""
    train(run, tokenizer, tokens=tokens, resume=True, config=TrainConfig(**FLAGS, **RUN))
    got = _losses(run)
    assert len(got) == 4
    print(f"resumed in 1 process: {got[2:]} (max abs diff {_max_diff(one_process[2:], got[2:]):.2g})")
    assert got[2:] == pytest.approx(one_process[2:], rel=1e-4, abs=1e-5)


def _matches_one_process(label: str, nproc: int, *flags: str, micro: int, reference: Path, tokens: Path,
                         tokenizer: Path, run: Path) -> None:
    """`nproc` processes under `flags` for 2 steps: the reference's losses and step-2 validation loss, a model
    directory transformers loads, and a checkpoint that continues the trajectory in one process."""
    proc = torchrun(nproc, run, tokens, tokenizer, *flags, micro=micro, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, got = _losses(reference), _losses(run)
    print(f"1 process: {one[:2]}\n{label}: {got} (max abs diff {_max_diff(one[:2], got):.2g})")
    assert got == pytest.approx(one[:2], rel=1e-4, abs=1e-5)
    if micro == FLAGS["micro_batch_size"]:      # validation batches are micro-batches: the same sequences only then
        assert _losses(run, "val_loss")[1] == pytest.approx(_losses(reference, "val_loss")[1], rel=1e-4)
    _loads_in_transformers(run)
    _resumes_in_one_process(run, one, tokens, tokenizer)


def test_fsdp2_matches_one_process_and_resumes_in_one(reference: Path, tokens: Path, train_tokenizer_dir: Path,
                                                      tmp_path: Path) -> None:
    # 2 processes, FSDP2 over both (dp 2): one micro-batch of 4 each, gradients reduce-scattered and averaged
    _matches_one_process("fsdp dp 2", 2, "--distributed", "fsdp", micro=4, reference=reference, tokens=tokens,
                         tokenizer=train_tokenizer_dir, run=tmp_path / "run")


@pytest.mark.slow          # 4 processes on the CI's 2 cores: a minute or two
def test_tp_and_pp_in_one_run(reference: Path, tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 4 processes = 2 pipeline stages × 2 tensor-parallel shards (dp 1): the step's 2 micro-batches of 4
    # flow through the 1F1B schedule, every stage's blocks, embedding and head split over its 2 shards
    _matches_one_process("pp 2 × tp 2", 4, "--tp", "2", "--pp", "2", micro=4, reference=reference, tokens=tokens,
                         tokenizer=train_tokenizer_dir, run=tmp_path / "run")


@pytest.mark.slow
def test_fsdp2_beside_tp(reference: Path, tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 4 processes = 2 replicas (FSDP2 over them) × 2 tensor-parallel shards: each replica one micro-batch of 4
    _matches_one_process("fsdp dp 2 × tp 2", 4, "--tp", "2", "--distributed", "fsdp", micro=4, reference=reference,
                         tokens=tokens, tokenizer=train_tokenizer_dir, run=tmp_path / "run")


@pytest.mark.slow
def test_fsdp2_beside_pp(reference: Path, tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 4 processes = 2 replicas (FSDP2 over them, stage by stage) × 2 pipeline stages: each replica 2 micro-batches
    # of 2 through the 1F1B schedule
    _matches_one_process("fsdp dp 2 × pp 2", 4, "--pp", "2", "--distributed", "fsdp", micro=2, reference=reference,
                         tokens=tokens, tokenizer=train_tokenizer_dir, run=tmp_path / "run")


@pytest.mark.slow          # 8 processes: a minute or more each on 2 cores
@pytest.mark.parametrize("data_parallel", ["ddp", "fsdp"])
def test_three_dimensional_mesh(data_parallel: str, reference: Path, tokens: Path, train_tokenizer_dir: Path,
                                tmp_path: Path) -> None:
    # 8 processes = 2 replicas × 2 pipeline stages × 2 tensor-parallel shards: each replica 2 micro-batches of 2
    _matches_one_process(f"{data_parallel} dp 2 × pp 2 × tp 2", 8, "--tp", "2", "--pp", "2", "--distributed",
                         data_parallel, micro=2, reference=reference, tokens=tokens, tokenizer=train_tokenizer_dir,
                         run=tmp_path / "run")


@pytest.mark.slow
def test_fsdp2_needs_data_parallel_replicas(tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    proc = torchrun(2, tmp_path / "run", tokens, train_tokenizer_dir, "--tp", "2", "--distributed", "fsdp")
    assert proc.returncode != 0
    assert "error: --distributed fsdp shards over the data-parallel replicas, and this run has one" in proc.stderr
    assert "internal error" not in proc.stderr
