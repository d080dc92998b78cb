"""Curation runs cut short or doubled up: Ctrl-C, and a second run on the same --out.

Ctrl-C during a multi-process curation stops it at once. Before, the pool's exit waited for every
queued unit of the phase (a minute on site-packages), and a worker interrupted mid-task could wedge
it for good; now the running units finish, the rest are never started, and the same command resumes.

A second run on the same --out stops with one error line. Before, it cleared the first one's
temporary files as its own leftovers, and the first died with an internal error halfway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

MIT = ("MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy of this software "
       "and associated documentation files (the \"Software\"), to deal in the Software without restriction.\n")


def _archives(root: Path, count: int, files: int = 10) -> list[str]:
    """`count` small repositories as .zip archives: one work unit each."""
    root.mkdir()
    paths = []
    for i in range(count):
        path = root / f"repo{i:03d}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("LICENSE", MIT)
            for j in range(files):
                z.writestr(f"pkg/mod{j}.py", f"def f{i}_{j}(x):\n    return x * {i * 100 + j} + {j}\n" * 30)
        paths.append(str(path))
    return paths


def _done_units(out: Path) -> int:
    return len(list((out / ".work" / "phase0").glob("*.done")))


@pytest.mark.slow  # about 25 s: the interrupted run, then the resumed one to its end
def test_ctrl_c_stops_without_running_the_queued_units(tmp_path: Path) -> None:
    units = 40
    sources = _archives(tmp_path / "src", units)
    out = tmp_path / "dataset"
    argv = [sys.executable, "-m", "codefoundry", "data", "curate", *sources, "--out", str(out), "-j", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while _done_units(out) < 2:  # well under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    left = units - _done_units(out)
    assert left > units // 2, f"only {left} of {units} units were left after Ctrl-C: the queue ran on"
    assert not (out / "manifest.json").exists()
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (out / "manifest.json").exists()


def test_second_run_on_the_same_out_is_refused(tmp_path: Path) -> None:
    sources = _archives(tmp_path / "src", 30)  # one unit each, run one at a time
    out = tmp_path / "dataset"
    argv = [sys.executable, "-m", "codefoundry", "data", "curate", *sources, "--out", str(out), "-j", "1"]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / ".work" / "plan.json").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)  # holds its lock while stopped: a fast first run cannot finish meanwhile
    try:
        second = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 1, second.stderr[-2000:]
    lines = [line for line in (second.stdout + second.stderr).splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "another run is writing" in lines[0], second.stdout + second.stderr
    assert (out / "manifest.json").exists() and not (out / ".work").exists()
