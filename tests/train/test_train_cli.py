"""`codefoundry train` and `train pack` on the command line: end to end, and one-line errors."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from codefoundry.cli import run
from codefoundry.cli.train import parse_duration
from codefoundry.errors import UserError


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error:")
    return err[0]


def test_pack_then_train_from_the_dataset(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    tokens = tmp_path / "tokens"
    assert run(["train", "pack", "--dataset", str(train_dataset_dir), "--tokenizer", str(train_tokenizer_dir),
                "--out", str(tokens), "--metadata-rate", "0.2", "-j", "1"]) == 0
    assert json.loads((tokens / "index.json").read_text())["dtype"] == "uint16"
    model = tmp_path / "model"
    argv = ["train", "--dataset", str(train_dataset_dir), "--tokenizer", str(train_tokenizer_dir), "--out",
            str(model), "--preset", "tiny", "--seq-len", "64", "--micro-batch-size", "2", "--max-steps", "3", "-j", "1"]
    assert run(argv) == 0
    assert (model / "tokens" / "index.json").exists()  # packed first, inside the run
    assert len((model / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert run(argv) == 1
    assert "already holds a trained model" in _one_error_line(capsys)


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--out", "m"], "missing --tokenizer"),
    (["train", "--tokenizer", "t", "--out", "m"], "exactly one of --dataset DIR or --tokens DIR"),
    (["train", "--tokenizer", "t", "--out", "m", "--tokens", "x", "--max-time", "soon"], "--max-time"),
    (["train", "--tokenizer", "t", "--out", "m", "--tokens", "x", "--preset", "huge"], "key 'preset'"),
    (["train", "pack", "--dataset", "nowhere", "--tokenizer", "t", "--out", "o"], "dataset nowhere does not exist"),
    (["train", "pack", "--tokenizer", "t", "--out", "o"], "missing --dataset"),
    # a path that reads as rich markup is printed as it is (it crashed the error printer)
    (["train", "--tokens", "[/x]", "--tokenizer", "[/x]", "--out", "o"], "[/x]"),
])
def test_errors_are_one_line(argv: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(argv) == 1
    assert expected in _one_error_line(capsys)


def test_parse_duration() -> None:
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    assert parse_duration("1.5m") == 90 and parse_duration(None) is None
    with pytest.raises(UserError):
        parse_duration("0s")


def test_disk_full_while_checkpointing_keeps_the_last_good_one(train_dataset_dir: Path, train_tokenizer_dir: Path,
                                                              tmp_path: Path) -> None:
    model = tmp_path / "model"
    base = ["train", "--dataset", str(train_dataset_dir), "--tokenizer", str(train_tokenizer_dir), "--out",
            str(model), "--preset", "tiny", "--seq-len", "64", "--micro-batch-size", "2"]
    assert run([*base, "--max-steps", "2"]) == 0
    (model / "manifest.json").unlink()  # an unfinished run with a checkpoint at step 2
    good = (model / "checkpoints" / "step-00000002.pt").read_bytes()
    limit = len(good) // 2  # a checkpoint no longer fits in one file

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "codefoundry", *base, "--max-steps", "4", "--resume"],
                          capture_output=True, text=True, preexec_fn=small_files, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "could not write the checkpoint of step 4" in lines[0]
    assert "step 2 is intact" in lines[0] and "Traceback" not in proc.stderr
    assert json.loads((model / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert (model / "checkpoints" / "step-00000002.pt").read_bytes() == good
    assert not list((model / "checkpoints").glob(".tmp-*"))
