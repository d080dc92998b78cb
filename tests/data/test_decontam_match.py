"""Decontamination: benchmark strings found case- and whitespace-insensitively, each removal names its item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codefoundry.benchmarks import humaneval, mbpp
from codefoundry.data.decontam import DecontamConfig, Decontaminate, benchmark_names
from codefoundry.data.pipeline import from_records
from codefoundry.errors import UserError
from conftest import stdlib_files


def _table(*texts: str):
    return from_records([{"content": t, "lang": "Python", "path": f"f{i}.py"} for i, t in enumerate(texts)])


def test_pasted_humaneval_solution_with_changed_case_and_whitespace_is_caught() -> None:
    problem = next(p for p in humaneval() if p["task_id"] == "HumanEval/0")
    solution = problem["canonical_solution"]
    pasted = "\n".join("        " + line.upper() + "   " for line in solution.splitlines())  # case + indentation
    host = stdlib_files("textwrap.py")["textwrap.py"]
    contaminated = host[:2000] + "\n\n\n" + pasted + "\n\n\t\n" + host[2000:]
    step = Decontaminate()
    kept, removed = step(_table(host, contaminated))
    assert kept.column("content").to_pylist() == [host]
    assert removed.column("reason").to_pylist() == ["decontam:humaneval:HumanEval/0:solution"]
    assert step.stats.removed == {"decontam:humaneval:HumanEval/0:solution": 1}


def test_mbpp_code_and_clean_files() -> None:
    item = next(r for r in mbpp() if r["task_id"] == 100)
    clean = list(stdlib_files("heapq.py", "bisect.py", "shlex.py").values())
    kept, removed = Decontaminate()(_table(*clean, "# my utils\n" + item["code"]))
    assert kept.num_rows == 3
    assert removed.column("reason").to_pylist()[0].startswith("decontam:mbpp:mbpp/100:")


def test_trivial_solutions_are_not_patterns() -> None:
    # HumanEval/53 is `return x + y`: far too common to mean contamination (bigcode-dataset skips it too)
    kept, removed = Decontaminate()(_table("def add(x, y):\n    return x + y\n"))
    assert kept.num_rows == 1 and removed.num_rows == 0


def test_extra_benchmark_jsonl(tmp_path: Path) -> None:
    bench = tmp_path / "secret-eval.jsonl"
    bench.write_text(json.dumps("def frobnicate_widgets(count):\n    return [w * 2 for w in range(count)]") + "\n" +
                     json.dumps({"id": "q7", "text": "SELECT name FROM planets WHERE moons > 3"}) + "\n")
    config = DecontamConfig(benchmarks=[], extra_jsonl=[bench])
    assert benchmark_names(config) == ["secret-eval"]
    kept, removed = Decontaminate(config)(_table("q = '''select name\n from planets where moons > 3'''\n", "x = 1\n"))
    assert removed.column("reason").to_pylist() == ["decontam:secret-eval:q7"]
    assert kept.num_rows == 1


def test_bad_benchmark_inputs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown benchmark 'humaneva'"):
        Decontaminate(DecontamConfig(benchmarks=["humaneva"])).setup()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok enough text here"}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2"):
        Decontaminate(DecontamConfig(benchmarks=[], extra_jsonl=[bad])).setup()


def test_near_match_catches_an_edited_solution() -> None:
    problem = next(p for p in humaneval() if p["task_id"] == "HumanEval/10")
    edited = (problem["prompt"].replace("Find the shortest", "Find a shortest") +
              problem["canonical_solution"].replace("beginning_of_suffix", "start"))
    kept, removed = Decontaminate()(_table(edited, stdlib_files("glob.py")["glob.py"]))
    assert kept.num_rows == 2
    config = DecontamConfig(near=True)  # no exact string left
    kept, removed = Decontaminate(config)(_table(edited, stdlib_files("glob.py")["glob.py"]))
    assert removed.column("reason").to_pylist() == ["decontam_near:humaneval:HumanEval/10:prompt"]
    assert kept.num_rows == 1
