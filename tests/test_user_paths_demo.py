"""`codefoundry demo --out` given the wrong place: one `error:` line before anything is written.

Before: an --out that is a file was an internal error, and a model (or any folder) given as --out got
the demo's artifacts written among its own files; a rerun with another --budget on an unfinished demo
failed inside a stage with a hint about an `--overwrite` the demo does not have.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from codefoundry.cli import run
from codefoundry.demo_plan import DemoPlan


def one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error:") and all(n in err[0] for n in needles), err[0]
    return err[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_that_is_a_file_an_artifact_or_a_folder_of_other_things(tmp_path: Path, tiny_model_dir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    assert run(["demo", "--no-serve", "--out", str(notes)]) == 1
    one_error(capsys, "is a file")
    assert notes.read_text() == "mine\n"
    model = listing(tiny_model_dir)
    assert run(["demo", "--no-serve", "--out", str(tiny_model_dir)]) == 1
    one_error(capsys, "holds a model artifact")
    assert listing(tiny_model_dir) == model
    assert run(["demo", "--no-serve", "--out", str(tmp_path)]) == 1
    one_error(capsys, "is not empty and is not a demo's output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_unfinished_demo_rerun_with_another_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo-out"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps(asdict(DemoPlan.for_budget(60))))  # as an interrupted 1m demo left it
    assert run(["demo", "--no-serve", "--out", str(out), "--budget", "2m"]) == 1
    one_error(capsys, "planned for a 60 s budget", "--budget 60s")
    assert json.loads((out / "plan.json").read_text())["budget_s"] == 60
