"""Scoring our server over HTTP gives the same pass@1 and completions as scoring locally.

A random tiny model scores 0 on real benchmarks, which would make the comparison vacuous, so the
task is built from the model's own greedy output: each prompt opens a string literal, and the
tests pass iff the (cut) completion is exactly the one the model produced, for half the problems.
Each problem's stop sequence is a piece of that output, sent first for half the problems and
fifth (beyond the 4 the server accepts, so the harness alone cuts it) for the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from codefoundry.cli import run
from codefoundry.eval.generation import LocalGenerator, Request, Sampling
from fixtures_serve import SERVE_API_KEY

CODE = ["def add(a, b):\n", "def main():\n    ", "int main(void) {", "package main", "return x", "bar = 1",
        "SELECT *", "while True:\n"]
MAX_NEW = 16
UNSEEN = ("§§1§§", "§§2§§", "§§3§§", "§§4§§")  # stops the model never writes, to push a real one to 5th place


def _literal_ok(text: str) -> bool:
    """`text` can sit verbatim inside r'''…''' in a source file."""
    return "'''" not in text and "\\" not in text and "\r" not in text and "\x00" not in text


def _latest_new_piece(text: str) -> str | None:
    """The shortest piece of `text` that starts as late as possible and does not occur before (None: none)."""
    for start in range(len(text) - 1, 0, -1):
        for end in range(start + 1, len(text) + 1):
            if text.find(text[start:end]) == start:
                return text[start:end]
    return None


def _eval(out: Path, task: Path, *source: str) -> tuple[float, list[dict]]:
    assert run(["eval", "--task", str(task), *source, "--temperature", "0", "--max-new-tokens", str(MAX_NEW),
                "--workers", "2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())["results"][task.stem]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return results["pass@1"], rows


@pytest.fixture(scope="module")
def own_output_task(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """(a JSONL task whose tests accept the model's greedy completion for half the problems, expected cuts)."""
    prompts = [f"S{i} = r'''{code}" for i, code in enumerate(CODE)]
    raw = LocalGenerator(tiny_model_dir).complete([Request(p, (), 0) for p in prompts], Sampling(0.0, 1.0, MAX_NEW))
    lines, expected, passing = [], [], 0
    for i, (prompt, text) in enumerate(zip(prompts, raw, strict=True)):
        assert not any(s in text for s in UNSEEN)
        stop = _latest_new_piece(text)  # the completion is cut before it (None: runs to max_new_tokens)
        cut = text[: text.find(stop)] if stop else text
        expected.append(cut)
        content = prompt.split("'''", 1)[1] + cut + "\n"  # the program is prompt + completion + "\n" + tests
        accept = passing < len(CODE) // 2 and _literal_ok(cut)
        passing += accept
        tests = f"'''\nassert S{i} == {content if accept else content + 'x'!r}\n"
        stops = [*UNSEEN[: 4 * (i % 2)], *([stop] if stop else [])]
        lines.append(json.dumps({"task_id": f"own/{i}", "prompt": prompt, "tests": tests, "stop": stops}))
    assert passing == len(CODE) // 2, f"too few completions fit in a string literal: {raw}"
    assert sum(e != t for e, t in zip(expected, raw, strict=True)) >= 3, f"too few stops found in {raw}"
    task = tmp_path_factory.mktemp("own") / "own.jsonl"
    task.write_text("\n".join(lines) + "\n")
    return task, expected


@pytest.mark.parametrize("api", ["tgi", "openai"])
def test_server_scores_like_local(api: str, own_output_task: tuple[Path, list[str]], tiny_model_dir: Path,
                                  tiny_server, tmp_path: Path) -> None:
    task, expected = own_output_task
    local_score, local = _eval(tmp_path / "local", task, "--model", str(tiny_model_dir))
    url = tiny_server.url + ("/v1" if api == "openai" else "")
    http_score, remote = _eval(tmp_path / api, task, "--endpoint", url, "--api", api, "--api-key", SERVE_API_KEY)
    assert local_score == http_score == 0.5
    assert [r["completion"] for r in remote] == [r["completion"] for r in local] == expected
    assert [r["verdict"] for r in remote] == [r["verdict"] for r in local]


def test_tgi_keeps_the_stop_text_the_harness_cuts(own_output_task: tuple[Path, list[str]], tiny_server) -> None:
    task, expected = own_output_task
    problems = [json.loads(line) for line in task.read_text().splitlines()]
    sent = [(p, e) for p, e in zip(problems, expected, strict=True) if p["stop"] and p["stop"][-1] not in UNSEEN]
    assert any(len(p["stop"]) == 1 for p, _ in sent) and any(len(p["stop"]) == 5 for p, _ in sent)
    for problem, cut in sent:
        stop = problem["stop"][-1]
        r = httpx.post(tiny_server.url + "/generate", headers={"Authorization": f"Bearer {SERVE_API_KEY}"},
                       json={"inputs": problem["prompt"],
                             "parameters": {"max_new_tokens": MAX_NEW, "stop": problem["stop"][:4]}}, timeout=60)
        assert r.status_code == 200
        if len(problem["stop"]) == 1:  # sent: generation ends at the stop, whose text TGI keeps
            assert r.json()["generated_text"] == cut + stop
        else:  # the 5th stop is never sent (max_stop_sequences 4): the server runs on, the harness cut it
            assert r.json()["generated_text"].startswith(cut + stop)


def test_long_prompts_get_the_same_budget_locally_and_over_tgi(tiny_model_dir: Path, tiny_server,
                                                                 tmp_path: Path) -> None:
    """Prompt + completion fill the 512-token context the same way: the prompt is kept whole and the
    completion gets what is left (TGI's max_total_tokens); a prompt longer than the context keeps its end."""
    body = "".join(f"value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 400))
    lines = [json.dumps({"task_id": f"long/{n}", "prompt": body[:n], "tests": "", "stop": []})
             for n in (300, 1200, len(body))]
    task = tmp_path / "long.jsonl"
    task.write_text("\n".join(lines) + "\n")
    outs = []
    for name, source in (("local", ["--model", str(tiny_model_dir)]),
                         ("tgi", ["--endpoint", tiny_server.url, "--api-key", SERVE_API_KEY])):
        assert run(["eval", "--task", str(task), *source, "--temperature", "0", "--max-new-tokens", "512",
                    "--workers", "2", "--out", str(tmp_path / name)]) == 0
        outs.append([json.loads(line)["completion"] for line in (tmp_path / name / "samples.jsonl").open()])
    assert outs[0] == outs[1]
    assert len(outs[0][0]) > len(outs[0][1]) > 0  # a short prompt leaves more room than a longer one
