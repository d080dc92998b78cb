"""Finalizing's column-level paths give what the per-text ones gave: the membership index's digests of a whole
string column (ASCII texts normalised over the column's buffer) are those of every text's n-grams, one by one; and
the shards' row groups, cut by the rows' sizes, do not depend on how units and batches cut the rows; stats counted
over units together are the merge of each unit's."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codefoundry.data.contains import DIGESTS, HASH, LEGACY_HASH, _file_grams, column_digests, content_digests
from codefoundry.data.pipeline import executor
from codefoundry.data.pipeline.executor import _write_arrow, gather_stats, read_unit, write_shards
from codefoundry.data.pipeline.schema import FILES_SCHEMA, REMOVED_SCHEMA, conform, from_records
from codefoundry.data.pipeline.stats import count_files, merge_all

# every character str.split() cuts at among ASCII (\x1c-\x1f too), and some beyond it
SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2000", "\u3000"]
WORDS = ["def", "Return", "X", "self.VALUE", "ÜnÏcode", "名前", "é", "İ", "ß", "\x00", "\x7f", "A" * 60, "{", "}",
         "Z@[`", "\x01\x1b!"]


def _texts(seed: int, n: int) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = []
    for _ in range(n):
        words = WORDS if rng.random() < 0.3 else [w for w in WORDS if w.isascii()]
        spaces = SPACES if rng.random() < 0.3 else SPACES[:10]
        lead = "".join(rng.choice(spaces) for _ in range(rng.choice([0, 0, 1, 5])))
        texts.append(lead + "".join(rng.choice(words) + "".join(rng.choice(spaces) for _ in range(rng.randint(0, 3)))
                                    for _ in range(rng.randint(0, 300))))
        if rng.random() < 0.1:
            texts.append(None)
    texts += [None, "", " ", "\n\n\t", "\x1c" * 80, "\x1f a" * 40]
    texts += ["x" * k for k in (49, 50, 51, 99, 100, 101)]
    texts += [" " * 3 + "y" * k + "\n" * 2 for k in (49, 50, 100, 150)]
    texts += ["Y" * k + " " for k in (49, 50, 51)] + [" " + "Y" * k for k in (49, 50, 51)]
    texts += ["é" * k for k in (49, 50, 101)] + ["a" * 49 + "é" + "b" * 60]
    return texts


def _plain(texts: list[str | None], digest: str) -> list[bytes]:
    """Every `_file_grams` n-gram of every text, encoded and hashed one by one."""
    return [DIGESTS[digest](g.encode("utf-8")) for t in texts for g in _file_grams(t or "")]


def _sorted_digests(out: bytes) -> list[bytes]:
    return sorted(out[i:i + 16] for i in range(0, len(out), 16))


@pytest.mark.parametrize("digest", [HASH, LEGACY_HASH])
@pytest.mark.parametrize("kind", ["string", "large_string", "sliced", "chunked", "ascii only"])
def test_column_digests_are_each_grams_digest(digest: str, kind: str) -> None:
    texts = _texts(7, 500)
    if kind == "ascii only":
        texts = [t for t in texts if t is None or t.isascii()]
    column: pa.Array | pa.ChunkedArray = pa.array(texts, pa.large_string() if kind == "large_string" else pa.string())
    if kind == "sliced":  # an offset into the buffers, as a batch sliced from a unit's table has
        column, texts = column.slice(37, 300), texts[37:337]
    if kind == "chunked":
        cuts = [0, 0, 1, 120, 121, 300, len(texts)]
        column = pa.chunked_array([column.slice(a, b - a) for a, b in itertools.pairwise(cuts)], pa.string())
    out, n = column_digests(column, digest)
    expected = _plain(texts, digest)
    assert n == len(expected) == len(out) // 16 > 1000
    assert _sorted_digests(out) == sorted(expected)
    assert column_digests(pa.array(texts, pa.string()), digest)[1] == content_digests(texts, digest)[1]


def test_column_digests_of_empty_and_null_columns() -> None:
    for column in (pa.array([], pa.string()), pa.array([None, None], pa.string()), pa.array(["", " ", "a" * 49]),
                   pa.chunked_array([], pa.string())):
        assert column_digests(column) == (b"", 0)
    with pytest.raises(TypeError, match="string column"):
        column_digests(pa.array([1, 2]))


def test_a_null_slot_holding_bytes_adds_nothing() -> None:
    """Arrow lets a null slot span bytes of the data buffer: they belong to no text."""
    texts = ["a" * 120, "NULL SLOT " * 30, "b" * 75 + "\t" + "c" * 80, "d" * 60]
    plain = pa.array(texts, pa.string())
    validity = pa.py_buffer(np.packbits(np.array([1, 0, 1, 1], bool), bitorder="little").tobytes())
    with_null = pa.Array.from_buffers(pa.string(), 4, [validity, *plain.buffers()[1:]], null_count=1)
    assert with_null.to_pylist()[1] is None
    out, n = column_digests(with_null)
    assert n == 2 + 3 + 1 and _sorted_digests(out) == sorted(_plain([texts[0], texts[2], texts[3]], HASH))


def _rows(seed: int, n: int) -> pa.Table:
    rng = random.Random(seed)
    texts = [None if rng.random() < 0.05 else "".join(rng.choice(["é", "x", "\n", "名"])
                                                      for _ in range(rng.randint(0, 900))) for _ in range(n)]
    table = from_records([{"repo_name": f"o/r{i % 5}", "path": f"{i}.py", "content": t,
                           "lang": rng.choice(["Python", None]), "licenses": rng.choice([["MIT"], [], None])}
                          for i, t in enumerate(texts)])
    return table.set_column(table.schema.get_field_index("size"), "size",
                            pa.array([len((t or "").encode()) + 7 for t in texts], pa.int64()))


def _staged(root: Path, table: pa.Table, cuts: list[int], batch: int) -> list[Path]:
    """`table` staged as units cut at `cuts`, each written in batches of `batch` rows (an empty unit among them)."""
    files = []
    for u, (a, b) in enumerate(itertools.pairwise([0, *cuts, table.num_rows])):
        files.append(root / f"{u}.arrow")
        _write_arrow(files[-1], (table.slice(s, min(batch, b - s)) for s in range(a, b, batch)), FILES_SCHEMA)
    return files


@pytest.mark.parametrize("max_bytes", [40_000, 10**9])
def test_shards_row_groups_depend_only_on_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   max_bytes: int) -> None:
    monkeypatch.setattr(executor, "SHARD_GROUP_BYTES", 15_000)
    monkeypatch.setattr(executor, "SHARD_GROUP_ROWS", 20)
    table = _rows(3, 400)  # rows of 7-2,707 bytes
    one = write_shards(_staged(tmp_path / "a", table, [0, 200], 400), tmp_path / "one", FILES_SCHEMA, max_bytes)
    other = write_shards(_staged(tmp_path / "b", table, [1, 13, 13, 250, 399], 17), tmp_path / "other", FILES_SCHEMA,
                         max_bytes)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in other]  # however units and batches cut them
    assert pa.concat_tables(pq.read_table(p) for p in one).equals(conform(table, FILES_SCHEMA))
    sizes = table.column("size").to_pylist()
    binding = set()
    at = 0
    for path in one:
        meta = pq.ParquetFile(path).metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(0 < g <= 20 for g in groups)
        for g in groups[:-1]:  # a group is cut only where one more row would pass the limits
            assert g == 20 or sum(sizes[at:at + g + 1]) > 15_000 >= sum(sizes[at:at + g])
            binding.add(g == 20)
            at += g
        at += groups[-1]
    assert binding == {True, False}  # both limits cut groups here
    assert (len(one) == 1) == (max_bytes == 10**9)


@pytest.mark.parametrize("stats_rows", [1, 50, 1 << 20])
def test_stats_of_units_together_are_the_merge_of_each_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             stats_rows: int) -> None:
    monkeypatch.setattr(executor, "STATS_ROWS", stats_rows)
    rng = random.Random(5)
    table = _rows(9, 300)
    table = table.set_column(table.schema.get_field_index("license_type"), "license_type", pa.array(
        [rng.choice(["permissive", "no_license", None]) for _ in range(300)], pa.string()))
    table = table.set_column(table.schema.get_field_index("licenses"), "licenses", pa.array(
        [rng.choice([["MIT"], [], None, ["MIT", "Apache-2.0"], ["GPL-3.0"]]) for _ in range(300)],
        pa.list_(pa.string())))
    kept = _staged(tmp_path / "kept", table.slice(0, 200), [0, 30, 30, 111], 25)
    outputs = []
    for u, kept_file in enumerate(kept):
        removed_files = []
        for phase in range(u % 3):  # none, one or two files of removed rows
            rows = conform(table.slice(200 + 20 * u + 7 * phase, 7 + phase), FILES_SCHEMA)
            reasons = pa.array([rng.choice(["near_dedup", "pii:x", None]) for _ in range(rows.num_rows)], pa.string())
            removed_files.append(tmp_path / f"removed-{u}-{phase}.arrow")
            _write_arrow(removed_files[-1], iter([rows.append_column("reason", reasons)]), REMOVED_SCHEMA)
        steps = {"near_dedup": {"rows_in": u + 3, "kept": u, "removed": {"near_dedup": 3}, "counters": {"c": u},
                                "seconds": 0.5}, **({"pii": {"rows_in": 1, "kept": 1, "removed": {}}} if u % 2 else {})}
        outputs.append((kept_file, removed_files, steps))
    plain = []  # each unit counted alone, then merged
    columns = ["size", "lang", "licenses", "license_type"]
    for kept_file, removed_files, steps in outputs:
        removed = pa.concat_tables([read_unit(f, [*columns, "reason"]) for f in removed_files]) if removed_files \
            else REMOVED_SCHEMA.empty_table().select([*columns, "reason"])
        plain.append(count_files(read_unit(kept_file, columns), removed,
                                 {n: {k: v for k, v in d.items() if k != "seconds"} for n, d in steps.items()}))
    got = gather_stats(outputs, "files")
    assert json.dumps(got) == json.dumps(merge_all(plain))
    assert got["subsets"]["files"]["totals"]["kept_files"] == 200 and got["subsets"]["files"]["removed"]
