"""A failing sandbox is never scored: the run survives what it can and stops with an error otherwise."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from codefoundry.cli import run
from codefoundry.eval import EvalConfig, Limits, Sandbox, run_eval
from codefoundry.eval.sandbox import SandboxError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox needs root (uid switch, namespaces)")


def _children_holders(before: set[int]) -> list[int]:
    """This process's sandbox namespace holders started after `before` was taken."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in before:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if cmdline == b"sleep\x002147483647\x00" and ppid == os.getpid():
            found.append(int(proc.name))
    return found


def _after_first_rows(samples: Path, action: object, stop: threading.Event) -> threading.Thread:
    def watch() -> None:
        while not stop.is_set():
            if samples.exists() and samples.read_bytes().strip():
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def slow_task(tmp_path: Path, n: int = 16) -> tuple[Path, dict[str, str]]:
    """A user task of `n` programs of 0.3 s each: the run lasts long enough to be disturbed mid-way."""
    tasks = tmp_path / "slow.jsonl"
    tasks.write_text("".join(json.dumps({"task_id": f"slow/{i}", "prompt": f"def f{i}():\n",
                                         "tests": f"assert f{i}() == 1\n"}) + "\n" for i in range(n)))
    return tasks, {f"def f{i}():\n": "    import time\n    time.sleep(0.3)\n    return 1\n" for i in range(n)}


def test_a_killed_namespace_holder_changes_no_verdict(protocol_peer, tmp_path: Path) -> None:
    before = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    tasks, answers = slow_task(tmp_path)
    peer = protocol_peer(answers)
    out = tmp_path / "eval"
    killed: list[int] = []

    def kill_holder() -> None:
        for pid in _children_holders(before):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    stop = threading.Event()
    watcher = _after_first_rows(out / "samples.jsonl", kill_holder, stop)
    run_eval(out, EvalConfig(tasks=[str(tasks)], endpoint=peer.url, chunk=2, workers=2))
    stop.set()
    watcher.join()
    assert killed, "the holder was not found mid-run"
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["slow"]["verdicts"] == {"passed": 16}
    assert results["sandbox"]["network_namespace"] is True


def test_a_vanished_sandbox_dir_stops_the_run_with_an_error(protocol_peer, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    tasks, answers = slow_task(tmp_path)
    peer = protocol_peer(answers)
    out = tmp_path / "eval"
    base = tmp_path / "sandboxes"
    base.mkdir()

    def remove_sandbox_dirs() -> None:  # a /tmp cleaner, run mid-evaluation (until the dirs are gone)
        deadline = time.monotonic() + 5
        while any(base.iterdir()) and time.monotonic() < deadline:
            for d in base.iterdir():
                shutil.rmtree(d, ignore_errors=True)

    stop = threading.Event()
    watcher = _after_first_rows(out / "samples.jsonl", remove_sandbox_dirs, stop)
    os.environ["TMPDIR"] = str(base)
    try:
        import tempfile
        tempfile.tempdir = None
        config = tmp_path / "eval.yaml"
        config.write_text("chunk: 2\nworkers: 2\n")
        code = run(["eval", "--task", str(tasks), "--endpoint", peer.url, "--out", str(out), "--config", str(config)])
    finally:
        del os.environ["TMPDIR"]
        tempfile.tempdir = None
        stop.set()
        watcher.join()
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "sandbox" in err and "Traceback" not in err, err
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert rows and {r["verdict"] for r in rows} == {"passed"} and len(rows) < 16
    assert not (out / "results.json").exists()


def test_a_slot_without_processes_left_is_an_error_not_a_verdict() -> None:
    """Processes of the slot's uid use up RLIMIT_NPROC: the wrapper cannot start the program."""
    with Sandbox(slots=1) as sb:
        uid = sb.uids[0]
        limits = Limits(wall_seconds=5, cpu_seconds=5, processes=4)
        files, argv = {"main.py": "print('ran')\n"}, ["python3", "-I", "main.py"]
        assert sb.run(files, argv, limits).stdout.strip() == "ran"
        hogs = [subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "60"])
                for _ in range(4)]
        try:
            time.sleep(0.3)
            with pytest.raises(SandboxError, match="failed to start a program"):
                sb.run(files, argv, limits)
            assert sb.retries >= 3
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        assert sb.run(files, argv, limits).stdout.strip() == "ran"  # and it recovers once they are gone
