"""Tensor and pipeline parallelism in one run (a `pp × tp` mesh) and FSDP2 on the data-parallel axis (alone or
beside --tp), on CPU with gloo: each follows the 1-process loss trajectory of the same global batch, writes a
model directory transformers loads, and its checkpoint resumes in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train_ddp import FLAGS
from test_train_tp_layouts import RUN, torchrun

from codefoundry.train import PackConfig, TrainConfig, pack, train


@pytest.fixture(scope="module")
def tokens(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack(train_dataset_dir, train_tokenizer_dir, tmp_path_factory.mktemp("tokens"), PackConfig(workers=1))


@pytest.fixture(scope="module")
def one_process(tokens: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """The reference: 4 steps of 8 sequences (2 accumulated micro-batches of 4) in one process."""
    out = tmp_path_factory.mktemp("one")
    train(out, train_tokenizer_dir, tokens=tokens, config=TrainConfig(**FLAGS, **RUN))
    return _losses(out)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


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
    assert got[2:] == pytest.approx(one_process[2:], rel=1e-4, abs=1e-5)


def test_fsdp2_matches_one_process_and_resumes_in_one(one_process: list[float], tokens: Path,
                                                      train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 2 processes, FSDP2 over both (dp 2): one micro-batch of 4 each, gradients reduce-scattered and averaged
    run = tmp_path / "run"
    proc = torchrun(2, run, tokens, train_tokenizer_dir, "--distributed", "fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _losses(run)
    print(f"1 process: {one_process[:2]}\nfsdp dp 2: {got}")
    assert got == pytest.approx(one_process[:2], rel=1e-4, abs=1e-5)
    _resumes_in_one_process(run, one_process, tokens, train_tokenizer_dir)


@pytest.mark.slow          # 4 processes on the CI's 2 cores: a minute or two
def test_tp_and_pp_in_one_run(one_process: list[float], tokens: Path, train_tokenizer_dir: Path,
                              tmp_path: Path) -> None:
    # 4 processes = 2 pipeline stages × 2 tensor-parallel shards (dp 1): the step's 2 micro-batches of 4
    # flow through the 1F1B schedule, every stage's blocks, embedding and head split over its 2 shards
    run = tmp_path / "run"
    proc = torchrun(4, run, tokens, train_tokenizer_dir, "--tp", "2", "--pp", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _losses(run)
    print(f"1 process: {one_process[:2]}\npp 2 × tp 2: {got}")
    assert got == pytest.approx(one_process[:2], rel=1e-4, abs=1e-5)
    _loads_in_transformers(run)
    _resumes_in_one_process(run, one_process, tokens, train_tokenizer_dir)


@pytest.mark.slow
def test_fsdp2_beside_tp(one_process: list[float], tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 4 processes = 2 replicas (FSDP2 over them) × 2 tensor-parallel shards: each replica one micro-batch of 4
    run = tmp_path / "run"
    proc = torchrun(4, run, tokens, train_tokenizer_dir, "--tp", "2", "--distributed", "fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _losses(run)
    print(f"1 process: {one_process[:2]}\nfsdp dp 2 × tp 2: {got}")
    assert got == pytest.approx(one_process[:2], rel=1e-4, abs=1e-5)
    _loads_in_transformers(run)
    _resumes_in_one_process(run, one_process, tokens, train_tokenizer_dir)


@pytest.mark.slow
def test_fsdp2_beside_pp(one_process: list[float], tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 4 processes = 2 replicas (FSDP2 over them, stage by stage) × 2 pipeline stages: each replica 2 micro-batches
    # of 2 through the 1F1B schedule
    run = tmp_path / "run"
    proc = torchrun(4, run, tokens, train_tokenizer_dir, "--pp", "2", "--distributed", "fsdp", micro=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _losses(run)
    print(f"1 process: {one_process[:2]}\nfsdp dp 2 × pp 2: {got}")
    assert got == pytest.approx(one_process[:2], rel=1e-4, abs=1e-5)
    _resumes_in_one_process(run, one_process, tokens, train_tokenizer_dir)


@pytest.mark.slow          # 8 processes: several minutes on 2 cores
@pytest.mark.parametrize("data_parallel", ["ddp", "fsdp"])
def test_three_dimensional_mesh(data_parallel: str, one_process: list[float], tokens: Path,
                                train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 8 processes = 2 replicas × 2 pipeline stages × 2 tensor-parallel shards: each replica 2 micro-batches of 2
    run = tmp_path / "run"
    proc = torchrun(8, run, tokens, train_tokenizer_dir, "--tp", "2", "--pp", "2", "--distributed", data_parallel,
                    micro=2, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _losses(run)
    print(f"1 process: {one_process[:2]}\n{data_parallel} dp 2 × pp 2 × tp 2: {got}")
    assert got == pytest.approx(one_process[:2], rel=1e-4, abs=1e-5)
    _resumes_in_one_process(run, one_process, tokens, train_tokenizer_dir)


@pytest.mark.slow
def test_fsdp2_needs_data_parallel_replicas(tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    proc = torchrun(2, tmp_path / "run", tokens, train_tokenizer_dir, "--tp", "2", "--distributed", "fsdp")
    assert proc.returncode != 0
    assert "error: --distributed fsdp shards over the data-parallel replicas, and this run has one" in proc.stderr
    assert "internal error" not in proc.stderr
