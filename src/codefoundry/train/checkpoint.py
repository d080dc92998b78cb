"""Training checkpoints: one file per step, written atomically, found through `latest.json`.

    OUT/checkpoints/
      step-00000100.pt   {"step", "tokens", "model", "optimizer", "decay_steps", "rng", "elapsed", "config"}
      step-00000200.pt
      latest.json        {"step": 200, "file": "step-00000200.pt"}   (replaced only after the .pt is whole)

A crash or a full disk mid-write leaves the previous checkpoint and `latest.json` as they were.

A checkpoint holds tensors and plain values only (numbers, strings, lists, tuples, dicts), and
is read back with torch's restricted unpickler (`weights_only=True`): a checkpoint directory
copied from elsewhere that holds any other object — a pickle that would run code when loaded —
is refused with an error, and nothing in it runs. Model weights never travel as pickles: the
model artifact is safetensors (`codefoundry.model`).
"""

from __future__ import annotations

import errno
import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from codefoundry.atomic import atomic_open, atomic_write_json, clean_temp_files
from codefoundry.errors import ArtifactError, UserError

log = logging.getLogger(__name__)
LATEST = "latest.json"
CHECKPOINT_NAME = re.compile(r"step-\d{8,}\.pt")


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    """Write `state` as step-N.pt, then point latest.json at it, then prune to `keep` files."""
    folder = checkpoint_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    target = folder / f"step-{step:08d}.pt"
    previous = latest_step(out)
    try:
        with atomic_open(target) as f:
            torch.save(state, f)
        atomic_write_json(folder / LATEST, {"step": step, "file": target.name})
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
            reason = f"disk full or file size limit ({reason})"
        kept = f"step {previous} is intact" if previous is not None else "there is no earlier checkpoint"
        raise UserError(f"could not write the checkpoint of step {step} to {folder}: {reason}; the last good "
                        f"checkpoint, {kept}", hint="free disk space and rerun with --resume") from None
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return target


def latest_step(out: Path) -> int | None:
    path = checkpoint_dir(out) / LATEST
    if not path.exists():
        return None
    return int(json.loads(path.read_text())["step"])


def load_checkpoint(out: Path) -> dict[str, Any] | None:
    """The latest checkpoint's state, or None when the run has none."""
    folder = checkpoint_dir(out)
    if not (folder / LATEST).exists():
        return None
    clean_temp_files(folder)
    try:
        name = json.loads((folder / LATEST).read_text())["file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{folder / LATEST} cannot be read: {e}") from None
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
        raise ArtifactError(f"{folder / LATEST} points to {name!r}, not a step-NNNNNNNN.pt file in {folder}")
    path = folder / name
    try:
        # weights_only: tensors and plain containers only; the optimizer's and RNG's state need nothing more
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        refused = f"it references {found.group(1)}" if found else "an object of another kind"
        raise ArtifactError(f"checkpoint {path} holds more than tensors and plain values ({refused}) and was "
                            "not loaded: unpickling it could run code",
                            hint="resume only from checkpoints codefoundry train wrote; start the run afresh "
                                 "without --resume otherwise") from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise ArtifactError(f"checkpoint {path} cannot be read: {e}") from None
