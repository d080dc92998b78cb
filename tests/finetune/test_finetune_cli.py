"""`codefoundry finetune` and `finetune merge` on the command line: a curated dataset/ with FIM,
the adapter card and manifest, and one `error:` line for each user mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_finetune_lora import make_base, write_rows

from codefoundry.cli import run


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error:")
    return err[0]


SMALL = ["--seq-len", "64", "--micro-batch-size", "2", "--grad-accum", "1", "--device", "cpu"]


def test_continued_pretraining_on_a_dataset_with_fim(tmp_path: Path, train_dataset_dir: Path,
                                                     train_tokenizer_dir: Path) -> None:
    base = make_base("gpt_bigcode", train_tokenizer_dir, tmp_path / "base")
    out = tmp_path / "adapters" / "mine"
    assert run(["finetune", "--model", str(base), "--data", str(train_dataset_dir), "--out", str(out),
                "--max-steps", "3", "--lora-r", "2", "--target-modules", "c_attn", *SMALL]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "adapter" and set(manifest["inputs"]) == {"model", "dataset"}
    training = manifest["extra"]["training"]
    assert training["fim_rate"] == 0.5 and training["steps"] == 3 and training["tokens"] == 3 * 2 * 64
    assert training["target_modules"] == ["c_attn"] and training["trainable_parameters"] == 2 * 2 * (64 + 64 + 2 * 16)
    assert manifest["extra"]["data"]["format"] == "dataset" and manifest["extra"]["data"]["validation_sequences"] > 0
    assert (out / "tokens" / "index.json").exists() and (out / "loss.png").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and records[0]["val_loss"] > 0 and [r["step"] for r in records[1:]] == [1, 2, 3]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "peft" and meta["base_model"] == str(base.resolve())
    assert {e["role"] for e in meta["codefoundry"]["lineage"]} >= {"adapter/model", "adapter/dataset"}
    assert "Validation loss:" in card and "finetune merge" in card


def test_instruction_rows_then_merge_on_the_command_line(tmp_path: Path, train_tokenizer_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = make_base("starcoder2", train_tokenizer_dir, tmp_path / "base")
    rows = write_rows(tmp_path / "rows.jsonl", 8)
    with rows.open("a") as f:
        f.write('{"instruction": "no response"}\n')
    out = tmp_path / "adapter"
    argv = ["finetune", "--model", str(base), "--data", str(rows), "--out", str(out), "--max-steps", "2", *SMALL]
    assert run(argv) == 0
    data = json.loads((out / "manifest.json").read_text())["extra"]["data"]
    assert data["skipped"] == {"missing_field:response": 1} and data["kept"] == 8 and data["rows"] == 9
    assert "missing_field:response ×1" in (out / "README.md").read_text()
    capsys.readouterr()
    assert run(argv) == 1
    assert "already holds a fine-tuned adapter" in _one_error_line(capsys)
    merged = tmp_path / "merged"
    assert run(["finetune", "merge", "--model", str(base), "--adapter", str(out), "--out", str(merged)]) == 0
    assert json.loads((merged / "config.json").read_text())["model_type"] == "starcoder2"


@pytest.mark.parametrize("case", ["empty", "no_model", "not_adapter", "bad_target", "bad_format", "out_is_model"])
def test_user_mistakes_are_one_error_line(tmp_path: Path, train_tokenizer_dir: Path, case: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = make_base("llama", train_tokenizer_dir, tmp_path / "base")
    rows = write_rows(tmp_path / "rows.jsonl", 4)
    out = str(tmp_path / "out")
    if case == "empty":
        (tmp_path / "empty.jsonl").write_text("\n\n")
        argv, expected = ["finetune", "--model", str(base), "--data", str(tmp_path / "empty.jsonl"), "--out", out], \
            "empty.jsonl has no rows"
    elif case == "no_model":
        argv, expected = ["finetune", "--model", str(tmp_path / "nope"), "--data", str(rows), "--out", out], \
            "does not exist"
    elif case == "not_adapter":
        argv, expected = ["finetune", "merge", "--model", str(base), "--adapter", str(tmp_path), "--out", out], \
            "is not a PEFT adapter directory"
    elif case == "bad_target":
        argv, expected = ["finetune", "--model", str(base), "--data", str(rows), "--out", out,
                          "--target-modules", "q_proj,c_attn"], "c_attn not in this model's linear layers"
    elif case == "bad_format":
        argv, expected = ["finetune", "--model", str(base), "--data", str(rows), "--out", out,
                          "--format", "dataset"], "--format dataset needs a curated dataset/ directory"
    else:
        argv, expected = ["finetune", "--model", str(base), "--data", str(rows), "--out", str(base)], \
            "already holds a model artifact, not an adapter"
    assert run(argv if argv[1] == "merge" else [*argv, *SMALL]) == 1
    assert expected in _one_error_line(capsys)
