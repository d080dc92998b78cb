"""Hostile JSONL and Parquet files: every line becomes a row (kept or removed with its reason), or one UserError.

Hypothesis writes JSONL files whose lines are any JSON value (fields of every type, lone
surrogates, nesting deeper than Python's stack), raw garbage (NULs, lone `\\r`, cut-off
objects), plain or gzipped, split into small work units; and Parquet files whose columns have
the wrong types or whose bytes are overwritten. Nothing is lost: the rows read equal the lines
written, and a bad file is a UserError naming it, never another exception.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from codefoundry.data.sources.tables import table_units
from codefoundry.data.sources.unit import ReadOptions, SourceLimits
from codefoundry.errors import UserError

OPTIONS = ReadOptions(limits=SourceLimits(max_file_bytes=200, table_rows_per_unit=3), batch_rows=4)
TEXT = st.text(max_size=20) | st.sampled_from(["\ud800", "a\udfffb", "\x00", "é€😀", "x" * 300])
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(SCALAR, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                    max_leaves=8)
FIELDS = st.sampled_from(["content", "path", "repo_name", "licenses", "stars", "forks", "lang", "hexsha",
                          "max_stars_repo_path", "max_stars_repo_licenses", "max_stars_count", "language"])
ROW = st.dictionaries(FIELDS, JSON | TEXT, max_size=6)
GARBAGE = st.sampled_from(["[" * 50_000, '{"content": ' + "[" * 50_000, "{", '{"content": "x", "path":', "\x00\x00",
                           "a\rb", '{"content": "a\rb", "path": "p"}', "null", "[1, 2]", '"text"', "1e999"])
LINE = st.builds(lambda row: json.dumps(row), ROW) | GARBAGE
HEADER = json.dumps({"content": "print(1)\n", "path": "a.py", "repo_name": "acme/x", "licenses": ["MIT"]})


def _read_all(path: Path) -> list[dict]:
    return [row for unit in table_units(path, OPTIONS) for table in unit.read() for row in table.to_pylist()]


def _lines_written(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def _check_rows(rows: list[dict]) -> None:
    for row in rows:
        assert (row["content"] is None) == (row["reason"] is not None), row
        assert isinstance(row["repo_name"], str) and isinstance(row["licenses"], list)
        if row["content"] is not None:
            assert len(row["content"].encode()) <= OPTIONS.limits.max_file_bytes
            row["content"].encode("utf-8")          # strict: valid UTF-8 all the way into Arrow


@fuzz(25)
@given(lines=st.lists(LINE, max_size=12), gz=st.booleans())
def test_fuzz_jsonl_every_line_is_a_row(tmp_path_factory, lines, gz):
    path = tmp_path_factory.mktemp("jsonl") / ("t.jsonl.gz" if gz else "t.jsonl")
    data = "\n".join([HEADER, *lines]).encode("utf-8", "surrogatepass") + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    rows = _read_all(path)
    assert len(rows) == _lines_written(data)
    _check_rows(rows)


@fuzz(25)
@given(first=LINE)
def test_fuzz_jsonl_header_is_a_user_error_or_rows(tmp_path_factory, first):
    path = tmp_path_factory.mktemp("jsonl") / "t.jsonl"
    path.write_bytes(f"{first}\n{HEADER}\n".encode("utf-8", "surrogatepass"))
    try:
        rows = _read_all(path)
    except UserError as e:
        assert str(path) in str(e)
        return
    assert len(rows) == 2 - (not first.strip())
    _check_rows(rows)


COLUMN = st.sampled_from([
    pa.array(["x = 1\n", None, "y" * 300]), pa.array([1, 2, 3]), pa.array([b"\xff", b"a", None]),
    pa.array([["MIT"], [], None]), pa.array([[1], [2], [3]]), pa.array([{"a": 1}, {"a": 2}, None]),
    pa.array([1.5, None, -2.0]), pa.array([True, False, None]), pa.array(["MIT", "GPL-3.0-or-later", ""]),
    pa.array([10**18, -1, 0])])


@fuzz(30)
@given(columns=st.dictionaries(FIELDS, COLUMN, max_size=6),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3))
def test_fuzz_parquet_typed_columns_and_corrupt_bytes(tmp_path_factory, columns, flips):
    path = tmp_path_factory.mktemp("pq") / "t.parquet"
    columns = {"content": pa.array(["a = 1\n", "b", "c"]), "path": pa.array(["a.py", "b.py", "c.py"])} | columns
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    data = bytearray(buf.getvalue())
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    path.write_bytes(bytes(data))
    try:
        rows = _read_all(path)
    except UserError as e:
        assert str(path) in str(e)
        return
    assert len(rows) == 3
    _check_rows(rows)


# ---- regressions found by the properties above ----

@pytest.mark.parametrize("line", [
    json.dumps({"content": "x", "path": "a.py", "licenses": 5}),               # not iterable
    json.dumps({"content": "x", "path": "a.py", "licenses": [1, {"a": 2}]}),   # items not strings
    json.dumps({"content": "x", "path": "a.py", "repo_name": 5}),              # Arrow: expected bytes
    json.dumps({"content": "x", "path": "a.py", "lang": ["Python"]}),
    json.dumps({"content": "x", "path": "a.py", "stars": 10**30}),             # past int64
    '{"content": "\\ud800", "path": "a.py"}',                                  # a lone surrogate
    '{"content": "x", "path": "\\udfff.py"}',
    '{"content": "x", "path": "a.py", "licenses": "\\ud800"}',
    "[" * 100_000,                                                             # RecursionError in json.loads
])
def test_jsonl_rows_of_wrong_types_are_rows(tmp_path: Path, line: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(f"{HEADER}\n{line}\n{{\"cut\":\n")      # the last line is malformed: the per-line reader runs
    rows = _read_all(path)
    assert len(rows) == 3
    _check_rows(rows)
    assert rows[0]["reason"] is None and rows[2]["reason"] == "read:bad_json"


def test_jsonl_empty_objects_are_rows_not_lost(tmp_path: Path) -> None:
    """Arrow reads a unit of only `{}` lines as a table of no columns and no rows: they vanished."""
    (tmp_path / "t.jsonl").write_text(HEADER + "\n{}\n{}\n{}\n")
    rows = _read_all(tmp_path / "t.jsonl")
    assert [r["reason"] for r in rows] == [None] + ["read:missing_content"] * 3


def test_jsonl_header_that_is_not_an_object_is_one_clear_error(tmp_path: Path) -> None:
    for first in ('"abc"', "[" * 100_000):
        (tmp_path / "t.jsonl").write_text(first + "\n")
        with pytest.raises(UserError, match=r"t\.jsonl: first line is not a JSON object"):
            table_units(tmp_path / "t.jsonl", OPTIONS)


def test_parquet_corrupt_past_its_footer_is_a_user_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"content": ["x" * 50] * 10, "path": [f"{i}.py" for i in range(10)]}), buf,
                   compression="snappy")
    data = bytearray(buf.getvalue())
    data[4:40] = b"\xff" * 36                            # the first data page; the footer is intact
    (tmp_path / "t.parquet").write_bytes(bytes(data))
    units = table_units(tmp_path / "t.parquet", OPTIONS)  # the footer reads fine
    with pytest.raises(UserError, match=r"t\.parquet is not a readable parquet file"):
        [t for u in units for t in u.read()]
