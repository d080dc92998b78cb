"""`codefoundry finetune` given the wrong things: each mistake is one `error:` line and nothing is lost.

Before: an --out that is a file was an internal error; data that is refused left an empty --out behind;
a --resume with another --lora-r was an internal error (a tensor shape), and one with other data or
another LoRA alpha trained on silently, so the adapter's card named data its weights never saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codefoundry.cli import run


def one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith(("error", "internal"))]
    assert len(err) == 1, err
    assert err[0].startswith("error:") and all(n in err[0] for n in needles), err[0]
    return err[0]


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"add {i} and {i}", "response": f"{2 * i}"}) + "\n"
                            for i in range(24)))
    return path


def test_out_that_is_a_file_or_the_model_is_refused(tiny_model_dir: Path, rows: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = rows.read_bytes()
    assert run(["finetune", "--model", str(tiny_model_dir), "--data", str(rows), "--out", str(rows)]) == 1
    one_error(capsys, "is a file")
    assert rows.read_bytes() == before
    assert run(["finetune", "--model", str(tiny_model_dir), "--data", str(rows), "--out", str(tiny_model_dir)]) == 1
    one_error(capsys, "already holds a model artifact")


def test_refused_data_leaves_no_out(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe not text\n")
    out = tmp_path / "adapters" / "x"
    assert run(["finetune", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(out)]) == 1
    one_error(capsys, "not UTF-8")
    assert not out.exists()


def test_resume_with_other_settings_or_data_is_refused(tiny_model_dir: Path, rows: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adapter"
    base = ["finetune", "--model", str(tiny_model_dir), "--out", str(out), "--micro-batch-size", "2",
            "--grad-accum", "1", "--seq-len", "64", "--max-steps", "2", "--checkpoint-interval", "1"]
    assert run([*base, "--data", str(rows)]) == 0
    capsys.readouterr()
    weights = (out / "adapter_model.safetensors").read_bytes()
    other = tmp_path / "other.jsonl"
    other.write_text(rows.read_text().replace("add", "sum"))
    assert run([*base, "--data", str(other), "--resume"]) == 1
    one_error(capsys, "another --data")
    assert run([*base, "--data", str(rows), "--resume", "--lora-alpha", "4"]) == 1
    one_error(capsys, "another LoRA setting")
    (out / "checkpoints" / "run.json").unlink()      # a run from before the record: the weights' shapes still tell
    assert run([*base, "--data", str(rows), "--resume", "--lora-r", "4"]) == 1
    one_error(capsys, "do not match this run's adapter")
    assert (out / "adapter_model.safetensors").read_bytes() == weights


def test_alpaca_rows_train_and_a_missing_response_is_named(tiny_model_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"double {i}", "input": "", "output": f"{2 * i}"}) + "\n"
                              for i in range(12)))
    out = tmp_path / "adapter"
    assert run(["finetune", "--model", str(tiny_model_dir), "--data", str(alpaca), "--out", str(out),
                "--micro-batch-size", "2", "--grad-accum", "1", "--seq-len", "64", "--max-steps", "1"]) == 0
    assert (out / "adapter_model.safetensors").exists()
    capsys.readouterr()
    no_answer = tmp_path / "questions.jsonl"
    no_answer.write_text("".join(json.dumps({"instruction": f"double {i}"}) + "\n" for i in range(4)))
    assert run(["finetune", "--model", str(tiny_model_dir), "--data", str(no_answer), "--out",
                str(tmp_path / "other")]) == 1
    one_error(capsys, "missing_field:response", "need instruction, response")
