"""Checkpoints from disk are data, never code: a pickle that would run code on `--resume` is refused unrun."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from codefoundry.cli import run
from codefoundry.errors import ArtifactError
from codefoundry.train import PackConfig, pack
from codefoundry.train.checkpoint import checkpoint_dir, load_checkpoint, save_checkpoint

SRC = Path(__file__).parents[2] / "src" / "codefoundry"


class _CreatesFile:
    """Unpickling this calls `open(path, "w")`: the file appears if and only if the pickle's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _plant(out: Path, decoy: Path) -> Path:
    """A checkpoint directory as if copied from elsewhere: a real-looking state plus one hostile object."""
    state = {"step": 3, "tokens": 0, "model": {"w": torch.zeros(2)}, "optimizer": {"state": {}, "param_groups": []},
             "rng": {"torch": torch.get_rng_state()}, "decay_steps": 10, "seq_len": 64, "global_seqs": 4,
             "config": {"x": _CreatesFile(decoy)}}
    return save_checkpoint(out, state, keep=2)


def test_hostile_checkpoint_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    decoy = tmp_path / "pwned"
    path = _plant(tmp_path / "run", decoy)
    with pytest.raises(ArtifactError, match=r"holds more than tensors and plain values \(it references io.open\)"):
        load_checkpoint(tmp_path / "run")
    assert not decoy.exists()
    # control: the planted object does run code under a plain unpickle, so the assertion above can fail
    control = tmp_path / "control"
    torch.save({"x": _CreatesFile(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists() and path.exists()


def test_real_checkpoint_state_loads(tmp_path: Path) -> None:
    """What `train` saves (AdamW's state, fused flag, betas tuple, RNG bytes, nested config) needs no allowlist."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"step": 1, "tokens": 64, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "decay_steps": None, "warmup_steps": 2, "rng": {"torch": torch.get_rng_state()}, "elapsed": 0.5,
             "seq_len": 8, "global_seqs": 1, "config": {"preset": "tiny", "optim": {"betas": [0.9, 0.95]}}}
    save_checkpoint(tmp_path, state, keep=1)
    back = load_checkpoint(tmp_path)
    assert torch.equal(back["model"]["weight"], model.weight.detach())
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"]) and back["config"] == state["config"]


def test_latest_pointer_outside_the_folder_refused(tmp_path: Path) -> None:
    folder = checkpoint_dir(tmp_path)
    folder.mkdir(parents=True)
    torch.save({"step": 1}, tmp_path / "elsewhere.pt")
    (folder / "latest.json").write_text(json.dumps({"step": 1, "file": "../elsewhere.pt"}))
    with pytest.raises(ArtifactError, match=r"not a step-NNNNNNNN\.pt file"):
        load_checkpoint(tmp_path)


def test_resume_from_hostile_checkpoint_is_one_error_line(train_dataset_dir: Path, train_tokenizer_dir: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = pack(train_dataset_dir, train_tokenizer_dir, tmp_path / "tokens", PackConfig(workers=1))
    decoy = tmp_path / "pwned"
    _plant(tmp_path / "model", decoy)
    code = run(["train", "--tokens", str(tokens), "--tokenizer", str(train_tokenizer_dir), "--out",
                str(tmp_path / "model"), "--preset", "tiny", "--seq-len", "64", "--max-steps", "1", "--resume"])
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "could run code" in err and "Traceback" not in err
    assert not decoy.exists()


def test_src_loads_no_pickles() -> None:
    """Model files are safetensors (or GGUF), checkpoints go through the restricted unpickler: no other pickle loads."""
    offenders = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if (re.search(r"\b(pickle|cPickle|dill|joblib|cloudpickle|marshal|shelve)\.(load|loads|Unpickler|open)\b",
                          code)
                    or "allow_pickle=True" in code or "weights_only=False" in code
                    or ("torch.load(" in code and "weights_only=True" not in code)):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not offenders, offenders
