"""The membership Bloom filter: no false negatives, false positives near the 1% design rate, chains only."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codefoundry.data.contains import BloomFilter, build_contains_index, contains
from codefoundry.data.pipeline import conform
from codefoundry.errors import ArtifactError
from conftest import stdlib_files


def test_bloom_false_positive_rate() -> None:
    rng = random.Random(0)
    grams = ["".join(rng.choice(string.ascii_letters) for _ in range(50)) for _ in range(20_000)]
    bloom = BloomFilter.sized(10_000)
    bloom.add(grams[:10_000])
    assert bloom.contains(grams[:10_000]).all()
    assert bloom.contains(grams[10_000:]).mean() < 0.02


def test_contains_reports_chained_spans(tmp_path: Path) -> None:
    files = stdlib_files("heapq.py", "textwrap.py")
    (tmp_path / "data" / "files").mkdir(parents=True)
    pq.write_table(conform(pa.table({"content": list(files.values())})), tmp_path / "data/files/train-0.parquet")
    build_contains_index(tmp_path)
    inside = contains(tmp_path, "prefix that is new " + files["heapq.py"][500:1500] + " and a new suffix")
    assert inside.longest_chain >= 15 and inside.coverage > 0.8
    outside = contains(tmp_path, stdlib_files("glob.py")["glob.py"])
    assert outside.spans == [] and outside.coverage == 0
    assert contains(tmp_path, "short").windows == 0


def test_missing_index_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no membership index"):
        contains(tmp_path, "x" * 100)
