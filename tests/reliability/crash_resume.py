"""Crash-resume harness: run a stage's real CLI in a subprocess, SIGKILL it at a seeded random point, resume it.

    ref = reference(stage, inputs, tmp / "ref")        # one uninterrupted run, timed (in this process)
    kill = run_killed(stage, inputs, out, seed, ref.work_seconds)   # the CLI in a subprocess, SIGKILLed
    resume(stage, inputs, out)                         # the stage's own resume (same command, or --resume)
    assert stage.artifact(out) == stage.artifact(ref.out)

A `Stage` says how to run it (`command`, `resume_command`), when its work has visibly begun
(kill points are drawn after that, over the reference run's duration; the reference and the
resume run in this process through the same CLI entry point, the killed run in a subprocess), what its finished
artifact is (bytes, with what legitimately differs between two runs — wall times, the run's
own path — taken out by its `artifact` function), and which scratch paths must be gone once it
finishes. The whole process group is killed, worker processes included, as an OOM kill or a
power cut would. New resumable stages (fine-tuning, new dataset subsets) add a `Stage`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codefoundry.atomic import TEMP_PREFIX

Inputs = Mapping[str, Path]


@dataclass(frozen=True)
class Stage:
    name: str
    command: Callable[[Inputs, Path], list[str]]            # arguments after `codefoundry`
    begun: Callable[[Path], bool]                           # work is under way in `out`
    artifact: Callable[[Path], dict[str, object]]           # the finished artifact, as compared between runs
    scratch: tuple[str, ...] = ()                           # paths under `out` that must be gone when it is done
    resume_command: Callable[[Inputs, Path], list[str]] | None = None   # None: the same command again
    consistent: Callable[[Path], list[str]] = field(default=lambda out: [])  # what a crash must never leave


@dataclass
class Reference:
    out: Path
    seconds: float
    work_seconds: float          # the span kill points are drawn over


@dataclass
class Kill:
    seed: int
    delay: float                 # seconds after `begun`
    killed: bool                 # False: the run ended before the kill came
    state: list[str]             # what was in `out` when it died (for the report)


def _argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "codefoundry", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:   # its own session: the kill reaches its worker processes too
        return subprocess.Popen(_argv(args), stdout=f, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)


def _wait_begun(stage: Stage, proc: subprocess.Popen, out: Path, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not stage.begun(out):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return time.perf_counter()


def run_in_process(args: list[str]) -> float:
    """Run the CLI to the end in this process (no start-up cost: the imports are loaded); returns its seconds."""
    from codefoundry.cli import run

    start = time.perf_counter()
    code = run(args)
    assert code == 0, f"`codefoundry {' '.join(args)}` exited {code}"
    return time.perf_counter() - start


def reference(stage: Stage, inputs: Inputs, out: Path) -> Reference:
    """One uninterrupted run; its duration (in process, so all work) is the span kill points are drawn over."""
    seconds = run_in_process(stage.command(inputs, out))
    return Reference(out, seconds, max(seconds, 0.05))


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    else:   # the leader is gone; reap any worker it left in its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_killed(stage: Stage, inputs: Inputs, out: Path, seed: int, work_seconds: float,
               args: list[str] | None = None, timeout: float = 300) -> Kill:
    """Start the stage, then SIGKILL its process group at a seeded random point of its work."""
    rng = random.Random(seed)
    delay = rng.uniform(0.05, 0.85) * work_seconds
    log = out.parent / f"{out.name}.killed-{seed}.log"
    proc = _start(args or stage.command(inputs, out), log)
    try:
        begun = _wait_begun(stage, proc, out, timeout)
        while proc.poll() is None and time.perf_counter() - begun < delay:
            time.sleep(0.005)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        _kill_group(proc)
    state = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []
    return Kill(seed, delay, killed, state)


def resume(stage: Stage, inputs: Inputs, out: Path) -> None:
    """The stage's own way to continue: the same command again, or its resume command."""
    run_in_process((stage.resume_command or stage.command)(inputs, out))


def leftovers(stage: Stage, out: Path) -> list[str]:
    """Temp files of interrupted writes, and scratch paths, still in a finished artifact."""
    temps = [p.relative_to(out).as_posix() for p in out.rglob(TEMP_PREFIX + "*")]
    return temps + [s for s in stage.scratch if (out / s).exists()]


# ---- what artifacts are compared on ----

def files(out: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, object]:
    """Every file's bytes by relative path (JSON files parsed), less those `skip` names."""
    found: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not skip(rel):
            found[rel] = p.read_bytes()
    return found


def manifest(out: Path, volatile_extra: tuple[str, ...] = ()) -> dict[str, object]:
    """manifest.json without its creation time, the command line (names `out`) and wall times."""
    m = json.loads((out / "manifest.json").read_text())
    m.pop("created")
    m.pop("command")
    m["extra"] = {k: v for k, v in m.get("extra", {}).items() if k not in volatile_extra}
    return m


def without_paths(data: object, out: Path) -> object:
    """`data` with the artifact's own path written as <out> (two runs write to two directories)."""
    text = json.dumps(data, sort_keys=True) if not isinstance(data, bytes) else data.decode(errors="replace")
    return text.replace(str(out.resolve()), "<out>").replace(str(out), "<out>")
