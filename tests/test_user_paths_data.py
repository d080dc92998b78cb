"""Data paths a user can get wrong or an attacker can abuse: dual licenses, a doubled-up --overwrite.

An SPDX `OR` is the user's choice: `MIT OR GPL-3.0` code is permissive because MIT is (before, every id of
an expression counted as if joined by AND, and such dual-licensed code was removed). A second
`data curate --overwrite` on the --out another run is writing stops with one error line before it
deletes anything (before, it cleared the tree first and the first run died halfway). `data contains` refuses
a snippet too long to check (before, a 1.5 MB file took a minute and 2 GB of memory; a 67 MB one, 11 GB).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from codefoundry.cli import run
from codefoundry.data.license import license_type
from codefoundry.data.license.spdx import allows, parse_expression

MIT = ("MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy of this software "
       "and associated documentation files (the \"Software\"), to deal in the Software without restriction.\n")


@pytest.mark.parametrize(("expression", "entries", "kind"), [
    ("MIT OR GPL-3.0", ["GPL-3.0 OR MIT"], "permissive"),
    ("GPL-3.0-or-later OR Apache-2.0", ["Apache-2.0 OR GPL-3.0"], "permissive"),
    ("MIT AND GPL-3.0", ["GPL-3.0", "MIT"], "non_permissive"),
    ("GPL-3.0 OR AGPL-3.0", ["AGPL-3.0 OR GPL-3.0"], "non_permissive"),
    ("(MIT OR GPL-3.0) AND BSD-3-Clause", ["BSD-3-Clause", "GPL-3.0 OR MIT"], "permissive"),
    ("GPL-3.0 AND (MIT OR Apache-2.0)", ["GPL-3.0", "Apache-2.0 OR MIT"], "non_permissive"),
    ("(MIT AND GPL-3.0) OR Apache-2.0", ["Apache-2.0 OR (GPL-3.0 AND MIT)"], "permissive"),
    ("(MIT AND GPL-3.0) OR LGPL-2.1", ["LGPL-2.1 OR (GPL-3.0 AND MIT)"], "non_permissive"),
    ("mit or (apache-2.0 or bsd-3-clause)", ["Apache-2.0 OR BSD-3-Clause OR MIT"], "permissive"),
    ("GPL-2.0-only WITH Classpath-exception-2.0", ["GPL-2.0"], "non_permissive"),   # an exception adds permissions
    ("Apache-2.0 WITH LLVM-exception", ["Apache-2.0"], "permissive"),              # ... to its license
    ("GPL-2.0 WITH Classpath-exception-2.0 OR MIT", ["GPL-2.0 OR MIT"], "permissive"),  # WITH binds tighter than OR
    ("MIT OR (GPL-3.0", ["MIT", "GPL-3.0"], "non_permissive"),  # malformed: every id it names must be allowed
])
def test_spdx_expressions_follow_the_spec(expression: str, entries: list[str], kind: str) -> None:
    assert parse_expression(expression) == entries
    assert license_type(entries) == kind


def test_a_choice_is_evaluated_against_the_policy_given() -> None:
    assert allows("GPL-3.0 OR MIT", {"MIT"}) and not allows("GPL-3.0 OR MIT", {"Apache-2.0"})
    assert allows("GPL-3.0 OR MIT", {"GPL-3.0"})                  # a copyleft-friendly policy may take GPL
    assert allows("Apache-2.0 OR (GPL-3.0 AND MIT)", {"GPL-3.0", "MIT"})
    assert not allows("Apache-2.0 OR (GPL-3.0 AND MIT)", {"MIT"})
    assert license_type(["GPL-3.0 OR MIT"], permissive=["Apache-2.0"]) == "non_permissive"


def _repo(path: Path, files: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return str(path)


def _rows(root: Path) -> list[dict]:
    return [r for f in sorted(root.rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_dual_licensed_repository_is_kept_and_its_card_says_why(tmp_path: Path) -> None:
    code = "def area(width, height):\n    return width * height\n" * 10
    sources = [
        _repo(tmp_path / "dual.zip", {"pyproject.toml": '[project]\nname = "dual"\nlicense = "MIT OR GPL-3.0"\n',
                                      "dual/area.py": code}),
        _repo(tmp_path / "both.zip", {"pyproject.toml": '[project]\nname = "both"\nlicense = "MIT AND GPL-3.0"\n',
                                      "both/area.py": code.replace("area", "size")}),
        _repo(tmp_path / "header.zip", {"LICENSE": MIT,
                                        "h/x.py": "# SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only\n" + code}),
    ]
    out = tmp_path / "dataset"
    done = subprocess.run([sys.executable, "-m", "codefoundry", "data", "curate", *sources, "--out", str(out),
                           "-j", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    kept = {r["path"]: r for r in _rows(out / "data" / "files")}
    removed = {r["path"]: r for r in _rows(out / "removed" / "files")}
    assert kept["dual/area.py"]["licenses"] == ["GPL-3.0 OR MIT"]
    assert kept["dual/area.py"]["license_type"] == "permissive"
    assert kept["h/x.py"]["licenses"] == ["Apache-2.0 OR GPL-2.0", "MIT"]
    assert removed["both/area.py"]["reason"] == "license:gpl-3.0"
    assert "any of its choices" in (out / "card.md").read_text()


def test_overwrite_during_another_run_deletes_nothing(tmp_path: Path) -> None:
    sources = []
    (tmp_path / "src").mkdir()
    for i in range(30):  # one unit each, run one at a time
        files = {"LICENSE": MIT, **{f"pkg/mod{j}.py": f"def f{i}_{j}(x):\n    return x * {i * 100 + j}\n" * 30
                                    for j in range(10)}}
        sources.append(_repo(tmp_path / "src" / f"repo{i:03d}.zip", files))
    out = tmp_path / "dataset"
    argv = [sys.executable, "-m", "codefoundry", "data", "curate", *sources, "--out", str(out), "-j", "1"]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / ".work").glob("phase0/*.done")):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)  # holds its lock while stopped: a fast first run cannot finish meanwhile
    try:
        second = subprocess.run([*argv, "--overwrite"], capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert second.returncode == 1, second.stderr[-2000:]
    lines = [line for line in (second.stdout + second.stderr).splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "another run is writing" in lines[0], second.stdout + second.stderr
    assert first.returncode == 0, first_err[-2000:]
    assert (out / "manifest.json").exists() and not (out / ".work").exists()
    again = subprocess.run([*argv, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]      # once alone, --overwrite replaces the dataset
    assert (out / "manifest.json").exists()


def test_contains_refuses_a_snippet_too_long_to_check(tiny_dataset: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.py"
    big.write_text("".join(f"def function_{i}(argument):\n    return argument * {i}\n" for i in range(4000)))
    started = time.monotonic()
    assert run(["data", "contains", str(tiny_dataset), "--file", str(big)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "at most 100,000 are checked" in err[0], err
    assert time.monotonic() - started < 10        # refused up front, not after minutes of hashing
