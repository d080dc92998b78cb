"""Resume defects the crash-resume suite found, each pinned by the kill point that showed it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from codefoundry.cli import run


def test_train_killed_after_its_last_checkpoint_keeps_its_final_loss(train_dataset_dir: Path,
                                                                     train_tokenizer_dir: Path, tmp_path: Path) -> None:
    """Killed between the last checkpoint and the model's files, `--resume` runs no step: the model's manifest
    and card still give the run's final loss and validation loss (they were null)."""
    from codefoundry.train import PackConfig, pack

    tokens = pack(train_dataset_dir, train_tokenizer_dir, tmp_path / "tokens", PackConfig(workers=1))
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"preset": "tiny", "seq_len": 32, "micro_batch_size": 1, "max_steps": 4,
                                  "eval_interval": 2, "eval_batches": 1, "checkpoint_interval": 2}))
    out = tmp_path / "model"
    args = ["train", "--tokens", str(tokens), "--tokenizer", str(train_tokenizer_dir), "--out", str(out),
            "--config", str(config)]
    proc = subprocess.Popen([sys.executable, "-m", "codefoundry", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = out / "checkpoints" / "latest.json"
    try:
        while proc.poll() is None:
            if latest.exists() and json.loads(latest.read_text() or "{}").get("step") == 4:
                os.killpg(proc.pid, signal.SIGKILL)   # the last checkpoint is whole; the model is being written
                break
            time.sleep(0.002)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill: no kill point to test"
    assert not (out / "manifest.json").exists()

    assert run([*args, "--resume"]) == 0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    training = json.loads((out / "manifest.json").read_text())["extra"]["training"]
    assert training["steps"] == 4
    assert training["loss"] == round(log[-1]["loss"], 4)
    assert training["val_loss"] == round(log[-1]["val_loss"], 4)


def test_pack_rerun_with_other_settings_does_not_reuse_units_of_the_killed_run(
        train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    """A pack killed part-way, then run again with another --metadata-rate: every unit is tokenized with the
    new setting (the killed run's finished units were reused as they were, mixing two settings in one file)."""
    out = tmp_path / "tokens"
    base = ["train", "pack", "--dataset", str(train_dataset_dir), "--tokenizer", str(train_tokenizer_dir),
            "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "codefoundry", *base, "--metadata-rate", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while proc.poll() is None:
            if any((out / "work").glob("*/*.done")):
                os.killpg(proc.pid, signal.SIGKILL)   # one shard packed, the others not yet
                break
            time.sleep(0.002)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "index.json").exists()

    assert run([*base, "--metadata-rate", "1"]) == 0
    fresh = tmp_path / "fresh"
    assert run([*base[:-3], str(fresh), "--workers", "1", "--metadata-rate", "1"]) == 0
    for name in ("train/files.bin", "train/tests.bin", "index.json"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name


def test_finetune_killed_after_its_last_checkpoint_keeps_its_final_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Killed between the last checkpoint and the adapter's files, `finetune --resume` runs no step: the adapter's
    manifest gave a null loss and the base model's validation loss as the adapter's."""
    rows = tmp_path / "rows.jsonl"
    lines = [json.dumps({"instruction": f"Return {i}.", "response": f"def f():\n    return {i}\n"}) for i in range(12)]
    rows.write_text("\n".join(lines) + "\n")
    out = tmp_path / "adapter"
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(rows), "--out", str(out), "--max-steps", "4",
            "--checkpoint-interval", "2", "--eval-interval", "2", "--seq-len", "48", "--micro-batch-size", "2",
            "--lora-r", "2", "--device", "cpu", "--seed", "0"]
    assert run(args) == 0
    want = json.loads((out / "manifest.json").read_text())["extra"]["training"]
    for name in ("adapter_model.safetensors", "adapter_config.json", "manifest.json", "README.md", "loss.png"):
        (out / name).unlink()                    # what a kill after the step-4 checkpoint leaves
    assert run([*args, "--resume"]) == 0
    got = json.loads((out / "manifest.json").read_text())["extra"]["training"]
    assert got["loss"] == want["loss"] is not None and got["val_loss"] == want["val_loss"] != want["val_loss_before"]
