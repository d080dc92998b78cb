"""torchrun on CPU (gloo): 2 processes give the same losses as 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codefoundry.train import PackConfig, TrainConfig, pack, train

FLAGS = dict(preset="tiny", seq_len=64, micro_batch_size=4, batch_tokens=512, max_steps=4, lr=3e-3)


@pytest.fixture(scope="module")
def tokens(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack(train_dataset_dir, train_tokenizer_dir, tmp_path_factory.mktemp("tokens"), PackConfig(workers=1))


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def torchrun(out: Path, tokens: Path, tokenizer: Path, *extra: str,
             flags: dict | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "codefoundry", "train", "--tokens", str(tokens), "--tokenizer", str(tokenizer), "--out", str(out),
            *[a for k, v in (flags or FLAGS).items() for a in (f"--{k.replace('_', '-')}", str(v))], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one(mode: str, tokens: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    # 1 process: 2 micro-batches of 4 accumulated; 2 processes: 1 micro-batch of 4 each, gradients averaged.
    single = train(tmp_path / "one", train_tokenizer_dir, tokens=tokens, config=TrainConfig(**FLAGS))
    proc = torchrun(tmp_path / "two", tokens, train_tokenizer_dir, "--distributed", mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _losses(single), _losses(tmp_path / "two")
    print(f"1 process: {one}\n2 processes ({mode}): {two}")
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=1e-4, abs=1e-5)
    assert (tmp_path / "two" / "model.safetensors").exists() and (tmp_path / "two" / "README.md").exists()
