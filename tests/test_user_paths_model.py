"""Model paths a user gets wrong: a file where a model directory goes, a config that is not UTF-8, a
directory where the .gguf file goes. One `error:` line each, and nothing replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codefoundry.cli import run


def one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    captured = capsys.readouterr()
    err = [line for line in (captured.err + captured.out).strip().splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


@pytest.mark.parametrize("argv", [["model", "info"], ["serve", "--no-engine-process", "--port", "0", "--model"]],
                         ids=["info", "serve"])
def test_a_file_given_as_the_model(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    assert run([*argv, str(notes)]) == 1
    one_error(capsys, "notes.txt")


def test_a_config_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(b"\xff\xfe{\"model_type\": 1}")
    assert run(["serve", "--no-engine-process", "--port", "0", "--model", str(model)]) == 1
    one_error(capsys, "config.json cannot be read")


def test_export_onto_a_directory_keeps_it(tiny_model_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    target = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    before = sorted(p.name for p in target.iterdir())
    assert run(["model", "export", str(target), "--out", str(target), "--overwrite"]) == 1
    one_error(capsys, "is a directory")
    assert sorted(p.name for p in target.iterdir()) == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_export_onto_the_models_own_weights_keeps_them(tiny_model_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    target = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    weights = (target / "model.safetensors").read_bytes()
    assert run(["model", "export", str(target), "--out", str(target / "model.safetensors"), "--overwrite"]) == 1
    one_error(capsys, "is one of the files of the model")
    assert (target / "model.safetensors").read_bytes() == weights
