"""Resuming into the same --out: verdicts judged under other execution settings are never kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codefoundry.cli import run


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_a_changed_time_limit_rejudges_the_stored_completions(protocol_peer, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "slow.jsonl"
    tasks.write_text(json.dumps({"task_id": "slow/0", "prompt": "def f():\n", "tests": "assert f() == 1\n"}) + "\n")
    peer = protocol_peer({"def f():\n": "    import time\n    time.sleep(1.5)\n    return 1\n"})
    out = tmp_path / "eval"
    base = ["eval", "--task", str(tasks), "--endpoint", peer.url, "--out", str(out)]
    assert run(base) == 0
    first = _results(out)
    assert first["results"]["slow"]["verdicts"] == {"passed": 1}
    assert first["settings"]["execution"]["slow"]["run_seconds"] == 3.0
    requests = sum(peer.requests.values())

    assert run([*base, "--timeout", "1"]) == 0  # same completions, a stricter limit: judged again
    second = _results(out)
    assert second["results"]["slow"]["verdicts"] == {"timeout": 1} and second["programs_executed"] == 1
    assert second["settings"]["execution"]["slow"]["run_seconds"] == 1.0
    assert sum(peer.requests.values()) == requests  # nothing generated again
    assert "executing their stored completions again" in " ".join(capsys.readouterr().err.split())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["verdict"] == "timeout"

    assert run([*base, "--timeout", "1"]) == 0  # unchanged settings: nothing runs again
    assert _results(out)["programs_executed"] == 0
    assert run([*base, "--temperature", "0.8"]) == 1  # settings that change completions: refused
    assert "other settings (temperature differ)" in capsys.readouterr().err


def test_rows_from_older_verdict_rules_are_judged_again(protocol_peer, tmp_path: Path) -> None:
    """samples.jsonl rows without the verdict fingerprint (written under the exit-status rule) are not reused."""
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(json.dumps({"task_id": "t/0", "prompt": "def g():\n", "tests": "assert g() == 2\n"}) + "\n")
    peer = protocol_peer({"def g():\n": "    return 1\nimport sys\nsys.exit(0)\n"})
    out = tmp_path / "eval"
    base = ["eval", "--task", str(tasks), "--endpoint", peer.url, "--out", str(out)]
    assert run(base) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert rows[0]["verdict"] == "failed"
    stale = {k: v for k, v in rows[0].items() if k != "execution"} | {"verdict": "passed"}
    (out / "samples.jsonl").write_text(json.dumps(stale) + "\n")
    assert run(base) == 0
    assert _results(out)["results"]["t"]["verdicts"] == {"failed": 1}
