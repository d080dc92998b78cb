"""Full-text search index (SQLite FTS5): build from shards, bm25 hits with snippets, phrase fallback, errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codefoundry.data.pipeline import conform
from codefoundry.data.search import build_search_index, lookup, search
from codefoundry.errors import ArtifactError, UserError
from conftest import stdlib_files


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    files = stdlib_files("heapq.py", "textwrap.py", "shlex.py")
    (tmp_path / "data" / "files").mkdir(parents=True)
    table = pa.table({"repo_name": ["a/heap", "b/text", "b/split"], "path": list(files), "lang": ["Python"] * 3,
                      "licenses": pa.array([["MIT"], ["PSF-2.0"], []], pa.list_(pa.string())),
                      "content": list(files.values())})
    pq.write_table(conform(table), tmp_path / "data/files/train-0.parquet")
    build_search_index(tmp_path)
    return tmp_path


def test_search_hits(dataset: Path) -> None:
    hits = search(dataset, "heappush")
    assert hits[0].repo == "a/heap" and hits[0].path == "heapq.py" and hits[0].license == "MIT"
    assert "[heappush]" in hits[0].snippet
    assert {h.repo for h in search(dataset, "dedent OR shlex")} == {"b/text", "b/split"}
    assert search(dataset, 'width "') == search(dataset, 'width "')  # invalid FTS5 → phrase, no error
    with pytest.raises(UserError, match="empty"):
        search(dataset, "  ")


def test_lookup_and_missing_index(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert [f.path for f in lookup(dataset, user="b")] == ["shlex.py", "textwrap.py"]
    assert [f.status for f in lookup(dataset, repo="A/Heap")] == ["kept"]
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ArtifactError, match="no search index"):
        search(empty, "x")
