"""Exact dedup: one copy per content, chosen by The Stack v2's ranking."""

from __future__ import annotations

from pathlib import Path

from codefoundry.data.dedup import ExactDedup, run_global_step
from codefoundry.data.pipeline import from_records
from conftest import stdlib_files


def row(content: str, repo: str, license_type: str, stars: int | None = None, forks: int | None = None) -> dict:
    return {"content": content, "repo_name": repo, "license_type": license_type, "stars": stars, "forks": forks,
            "lang": "Python", "path": "m.py"}


def test_exact_dedup_ranking(tmp_path: Path) -> None:
    text, other = stdlib_files("colorsys.py", "keyword.py").values()
    units = [
        from_records([row(text, "a/gpl", "non_permissive", 9999), row(text, "b/nolicense", "no_license", 50)]),
        from_records([row(text, "c/mit-few-stars", "permissive", 2), row(text, "d/mit-more-stars", "permissive", 20),
                      row(other, "e/other", "permissive")]),
        from_records([row(text, "f/mit-more-stars-more-forks", "permissive", 20, 3)]),
    ]
    results = run_global_step(ExactDedup(), units, tmp_path)
    kept = [r for res in results for r in res.kept.column("repo_name").to_pylist()]
    assert kept == ["e/other", "f/mit-more-stars-more-forks"]
    reasons = {r for res in results for r in res.removed.column("reason").to_pylist()}
    assert reasons == {"exact_dedup"}


def test_exact_dedup_tie_break_is_first_row(tmp_path: Path) -> None:
    text = stdlib_files("stat.py")["stat.py"]
    units = [from_records([row(text, "x/first", "permissive")]), from_records([row(text, "y/second", "permissive")])]
    results = run_global_step(ExactDedup(), units, tmp_path)
    assert results[0].kept.num_rows == 1 and results[1].kept.num_rows == 0
