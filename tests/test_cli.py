"""The CLI's contract: help with examples and config defaults, version, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from codefoundry import __version__
from codefoundry.cli import run


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"codefoundry {__version__}"


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "codefoundry", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == f"codefoundry {__version__}"


@pytest.mark.parametrize("argv", [[], ["data"], ["tokenizer"], ["train"], ["eval"], ["serve"], ["demo"]])
def test_help_lists_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out
    assert "Examples" in out
    assert f"$ codefoundry {' '.join(argv)}".strip() in out


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`argv --help` as one line: table borders dropped, wrapped cells joined."""
    assert run([*argv, "--help"]) == 0
    return " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_help_defaults_come_from_the_config(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from codefoundry.data import CurateConfig
    from codefoundry.tokenizer import TokenizerTrainConfig

    monkeypatch.setenv("COLUMNS", "200")  # wide enough that no cell is cut short

    curate, tok = CurateConfig(), TokenizerTrainConfig()
    text = help_text(["data", "curate"], capsys)
    assert f"all (default: {curate.license_policy})" in text
    assert f"larger than this (default: {curate.limits.max_file_bytes})" in text
    assert "(default: no)" in text and "{default}" not in text
    text = help_text(["tokenizer", "train"], capsys)
    assert f"special tokens (default: {tok.vocab_size})" in text
    assert f"across languages (default: {tok.byte_budget})" in text
    assert f"rare languages (default: {tok.language_alpha})" in text and "{default}" not in text


def test_unknown_command_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "frobnicate" in err[0]


def test_bad_flag_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo", "--workers", "many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error:") and "--workers" in err[0] and "integer" in err[0]


def test_bad_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--log-level", "loud", "demo", "--help"]) == 2
    assert "--log-level" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workers: 2\ncolour: blue\n", "key 'colour': unknown key"),
        ("workers: lots\n", "key 'workers'"),
        ("workers: [1, 2\n", "is not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_bad_config_file_is_one_error_line(
    tmp_path: Path, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(text)
    assert run(["demo", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: config file") and expected in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_verbose_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("colour: blue\n")
    assert run(["demo", "--config", str(cfg), "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err
