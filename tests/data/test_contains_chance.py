"""Membership answers for long snippets: chance chains of Bloom false positives are not reported as found.

A query tests every offset of the snippet, so two false-positive windows 50 characters apart turn
up by chance in a long enough snippet; the filter's rate and the chain a span needs are set so
that this stays rare, whatever the snippet's length.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codefoundry.data.contains import build_contains_index, chain_needed, contains, load_bloom
from codefoundry.data.pipeline import conform
from conftest import stdlib_files

INDEXED = ("heapq.py", "textwrap.py", "shlex.py", "bisect.py")
ABSENT = ("getopt.py", "calendar.py", "argparse.py", "difflib.py", "inspect.py", "typing.py", "pickle.py",
          "tarfile.py", "ftplib.py")


def test_long_absent_snippets_are_not_found(tmp_path: Path) -> None:
    files = stdlib_files(*INDEXED)
    (tmp_path / "data" / "files").mkdir(parents=True)
    pq.write_table(conform(pa.table({"content": list(files.values())})), tmp_path / "data/files/train-0.parquet")
    build_contains_index(tmp_path)
    bloom = load_bloom(tmp_path)
    absent = stdlib_files(*ABSENT)
    windows = 0
    for name, text in absent.items():
        m = contains(tmp_path, text, bloom)
        windows += m.windows
        assert m.spans == [] and not m.found, (name, m.spans[:3], m.chain_needed)
    assert windows > 500_000 and bloom.false_positive_rate < 0.005
    # members stay found, a long snippet holding one needing a longer chain
    long_member = absent["difflib.py"] + files["heapq.py"][1000:3000] + absent["typing.py"]
    m = contains(tmp_path, long_member, bloom)
    assert m.found and m.chain_needed >= 3 and m.longest_chain >= 30


def test_chain_needed_grows_with_the_snippet() -> None:
    assert chain_needed(500, 0.001) == 2
    assert chain_needed(100_000, 0.001) == 3
    assert chain_needed(1_000, 0.01) == 4
