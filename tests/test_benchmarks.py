"""The one benchmark data module: counts and fields as the upstream sets define them."""

from __future__ import annotations

import pytest

from codefoundry import benchmarks


def test_humaneval_from_wheel() -> None:
    problems = benchmarks.humaneval()
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0" and "def has_close_elements" in problems[0]["prompt"]


@pytest.mark.parametrize(("kind", "count"), [("single-line", 1033), ("multi-line", 5815),
                                             ("random-span", 1640), ("random-span-light", 164)])
def test_infilling(kind: str, count: int) -> None:
    rows = benchmarks.humaneval_infilling(kind)
    assert len(rows) == count
    assert {"prompt", "suffix", "canonical_solution", "test", "entry_point"} <= rows[0].keys()


def test_mbpp_test_split() -> None:
    rows = benchmarks.mbpp()
    assert len(rows) == 500 and rows[0]["task_id"] == 11 and rows[-1]["task_id"] == 510
    assert len(benchmarks.mbpp(test_split_only=False)) == 974


@pytest.mark.parametrize(("lang", "count"), [("js", 161), ("java", 158), ("cpp", 161), ("rs", 156),
                                             ("go", 154), ("sh", 158)])
def test_multipl_e(lang: str, count: int) -> None:
    rows = benchmarks.multipl_e(lang)
    assert len(rows) == count and rows[0]["language"].startswith(lang) and rows[0]["stop_tokens"]


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="given 'fortran'"):
        benchmarks.multipl_e("fortran")
    with pytest.raises(ValueError, match="given 'weird'"):
        benchmarks.humaneval_infilling("weird")


def test_multiple_is_marked_evaluation_only() -> None:
    assert not benchmarks.BENCHMARK_SETS["multiple"].training_allowed
    assert all(s.strings() for s in benchmarks.BENCHMARK_SETS.values())
