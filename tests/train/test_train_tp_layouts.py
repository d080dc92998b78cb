"""Tensor and pipeline parallelism beside data parallelism (a 2-D device mesh) and resuming under another
layout, on CPU with gloo: every layout follows the 1-process loss trajectory of the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_ddp import FLAGS

from codefoundry.train import PackConfig, TrainConfig, pack, train

RUN = {"checkpoint_interval": 2, "decay_steps": 4}


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


def torchrun(nproc: int, out: Path, tokens: Path, tokenizer: Path, *extra: str, steps: int = 2, micro: int = 4,
             timeout: float = 480, run: dict | None = None) -> subprocess.CompletedProcess[str]:
    config = out.parent / f"{out.name}-config.json"
    config.write_text(json.dumps(run or RUN))
    flags = {**FLAGS, "max_steps": steps, "micro_batch_size": micro}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "codefoundry", "train", "--tokens", str(tokens), "--tokenizer", str(tokenizer), "--out", str(out),
            "--config", str(config),
            *[a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    (out.parent / f"{out.name}-stderr.txt").write_text(proc.stderr)     # the whole log beside the run, to read
    return proc


@pytest.mark.slow          # 4 processes on the CI's 2 cores: about a minute each
@pytest.mark.parametrize("layout", ["--tp", "--pp"])
def test_data_parallel_beside_model_parallel(layout: str, one_process: list[float], tokens: Path,
                                             train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 4 processes = 2 replicas × 2 (TP shards or pipeline stages); each replica takes 4 of the step's 8
    # sequences: under --tp as one micro-batch, under --pp as 2 micro-batches of 2 through the 1F1B schedule
    proc = torchrun(4, tmp_path / "run", tokens, train_tokenizer_dir, layout, "2", micro=4 if layout == "--tp" else 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _losses(tmp_path / "run")
    print(f"1 process: {one_process[:2]}\ndp 2 × {layout} 2: {got}")
    assert got == pytest.approx(one_process[:2], rel=1e-4, abs=1e-5)


@pytest.mark.slow          # two torchruns; tests/train/test_train_tp.py resumes a --tp 2 checkpoint unmarked
def test_pp2_checkpoint_resumes_at_tp2(one_process: list[float], tokens: Path, train_tokenizer_dir: Path,
                                       tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = torchrun(2, run, tokens, train_tokenizer_dir, "--pp", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun(2, run, tokens, train_tokenizer_dir, "--tp", "2", "--resume", steps=4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _losses(run)
    print(f"1 process: {one_process}\n--pp 2, then --tp 2: {got}")
    assert got == pytest.approx(one_process, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_model_parallel_refuses_a_process_count_it_cannot_split(tokens: Path, train_tokenizer_dir: Path,
                                                                tmp_path: Path) -> None:
    proc = torchrun(2, tmp_path / "run", tokens, train_tokenizer_dir, "--pp", "3")
    assert proc.returncode != 0
    assert "error: --pp 3 needs a multiple of 3 processes" in proc.stderr
    assert "internal error" not in proc.stderr
