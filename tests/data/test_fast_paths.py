"""The cheaper ways curation reads and counts give exactly what the plain ways gave (same dataset bytes)."""

from __future__ import annotations

import json
import random
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codefoundry.data.contains import (
    BITS,
    META,
    NGRAM,
    STRIDE,
    BloomFilter,
    _file_grams,
    build_contains_index,
    contains,
    normalize,
)
from codefoundry.data.dedup.minhash import _M2, _ROUND, U64, mix64, one_permutation_minhash
from codefoundry.data.dedup.partitions import read_partition, write_partitions
from codefoundry.data.license.match import _gram_index, references
from codefoundry.data.pii.assignments import assigned_secrets, named, positional
from codefoundry.data.pipeline.executor import _write_arrow, _write_parquet, read_parquet, read_unit, write_shards
from codefoundry.data.pipeline.schema import FILES_SCHEMA, REMOVED_SCHEMA, conform, from_records
from codefoundry.data.pipeline.stats import count_files
from codefoundry.data.sources.local import DirectoryRepo, disk_entry, walk
from codefoundry.data.sources.python_env import distributions, record_paths
from codefoundry.data.sources.repo import RepoInfo, repo_batches
from codefoundry.data.sources.unit import ReadOptions, SourceLimits
from conftest import MIT_LICENSE


def _chunks(table: pa.Table) -> list[list[int]]:
    return [[len(c) for c in column.chunks] for column in table.columns]


def test_read_parquet_is_read_table_chunk_for_chunk(tmp_path: Path) -> None:
    # a shard written from a table can differ in its pages with the chunking: read_parquet must chunk alike
    table = pa.table({"n": list(range(140_000)), "s": [str(i % 97) for i in range(140_000)]})
    path = tmp_path / "groups.parquet"
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table.slice(0, 1000))
        writer.write_table(table.slice(1000, 3))
        writer.write_table(table.slice(1003))  # > 2**17 rows: read_table cuts it
    empty = tmp_path / "empty.parquet"
    pq.ParquetWriter(empty, table.schema).close()
    for f in (path, empty):
        for columns in (None, ["s"]):
            want, got = pq.read_table(f, columns=columns), read_parquet(f, columns=columns)
            assert got.equals(want) and got.schema == want.schema
            assert _chunks(got) == _chunks(want)
    assert _chunks(read_parquet(path))[0] == [1000, 3, 131_072, 140_000 - 1003 - 131_072]


def test_record_paths_are_importlib_files(tmp_path: Path) -> None:
    for dist_info in distributions()[::6]:  # a sample: parsing every RECORD twice takes a while
        dist = metadata.Distribution.at(dist_info)
        assert record_paths(dist) == [f.as_posix() for f in dist.files or []], dist_info
    odd = tmp_path / "odd-1.0.dist-info"
    odd.mkdir()
    (odd / "METADATA").write_text("Name: odd\n")
    (odd / "RECORD").write_text('odd/./a.py,sha256=x,3\n"odd/b,c.py",,\nodd//d.py\nodd/e/,,\n/abs/f.py,,\n')
    dist = metadata.Distribution.at(odd)
    assert record_paths(dist) == [f.as_posix() for f in dist.files] == [
        "odd/a.py", "odd/b,c.py", "odd/d.py", "odd/e", "/abs/f.py"]
    egg = tmp_path / "egg.egg-info"
    egg.mkdir()
    (egg / "SOURCES.txt").write_text("egg/a.py\negg/with,comma.py\n")
    dist = metadata.Distribution.at(egg)
    assert record_paths(dist) == [f.as_posix() for f in dist.files] == ["egg/a.py", "egg/with,comma.py"]
    assert record_paths(metadata.Distribution.at(tmp_path / "none.dist-info")) == []


def test_entries_only_for_looked_at_paths_give_the_same_rows(tmp_path: Path) -> None:
    # a listing's entries are made only for the files read and the license/metadata files: same rows as all
    root = tmp_path / "proj"
    files = {f"src/m{i:02d}.py": f"x = {i}\n" for i in range(12)}
    files |= {"LICENSE": MIT_LICENSE, "zz/COPYING": MIT_LICENSE, "zz/pyproject.toml": "[project]\nname='p'\n",
              "a/notes.ipynb": "{}", "a/b.txt": "hello\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for limit, skip in ((3, ()), (5, (".ipynb",)), (None, ())):
        options = ReadOptions(SourceLimits(max_files_per_repo=limit), skip_suffixes=skip)
        every = [disk_entry(rel, full, root) for rel, full in walk(root)]
        want = pa.concat_tables(repo_batches(RepoInfo("proj"), every, **options.kwargs()))
        got = pa.concat_tables(DirectoryRepo(root, options).read())
        assert got.equals(want), (limit, skip)
        assert got.num_rows == (limit or len(files))


def test_shared_bigram_counts_are_set_intersections() -> None:
    refs, index = references(), _gram_index()
    every = sorted(set().union(*(r.grams for r in refs)))
    rng = random.Random(0)
    for size in (0, 1, 50, 2000, len(every)):
        present = frozenset([*rng.sample(every, size), "not a reference bigram"])
        assert index.shared(present).tolist() == [len(r.grams & present) for r in refs]


def _group_by_reference(table: pa.Table, column: str) -> dict[str, tuple[int, int]]:
    keys = pc.fill_null(table.column(column), "unknown")
    grouped = pa.table({"k": keys, "size": pc.fill_null(table.column("size"), 0)}).group_by("k").aggregate(
        [("size", "count"), ("size", "sum")])
    return {k: (n, b) for k, n, b in zip(*(grouped[c].to_pylist() for c in ("k", "size_count", "size_sum")),
                                         strict=True)}


def test_counts_match_an_arrow_group_by() -> None:
    rng = random.Random(1)
    langs = ["Python", "C", "", None]
    records = [{"lang": rng.choice(langs), "size": rng.choice([None, 0, 5, 1000]),
                "license_type": rng.choice(["permissive", None]), "licenses": rng.choice([["MIT"], [], None]),
                "reason": rng.choice(["a", "b"])} for _ in range(300)]
    kept = from_records(records[:150])
    removed = from_records(records[150:], REMOVED_SCHEMA)
    tree = count_files(kept, removed)["subsets"]["files"]
    for lang, (n, b) in _group_by_reference(kept, "lang").items():
        assert (tree["languages"][lang]["kept_files"], tree["languages"][lang]["kept_bytes"]) == (n, b)
    for reason, (n, b) in _group_by_reference(removed, "reason").items():
        assert tree["removed"][reason] == {"files": n, "bytes": b}
    pairs = pa.table({"lang": pc.fill_null(removed.column("lang"), "unknown"), "reason": removed.column("reason")})
    grouped = pairs.group_by(["lang", "reason"]).aggregate([("reason", "count")])
    for lang, reason, n in zip(*(grouped[c].to_pylist() for c in ("lang", "reason", "reason_count")), strict=True):
        assert tree["languages"][lang]["removed"][reason] == n
    assert "" in tree["languages"] and "unknown" in tree["languages"]


def _contains_reference(dataset: Path) -> tuple[np.ndarray, dict]:
    """The membership filter as built gram by gram: count, size, add each batch's `_file_grams`."""
    texts = [t or "" for f in sorted((dataset / "data").glob("*/*.parquet"))
             for t in pq.read_table(f).column("content").to_pylist()]
    n = sum(max(0, len(normalize(t)) - NGRAM + STRIDE) // STRIDE for t in texts)
    bloom = BloomFilter.sized(n)
    for t in texts:
        if grams := _file_grams(t):
            bloom.add(grams)
    return bloom.bits, {"m": bloom.m, "k": bloom.k, "n": n}


def test_contains_index_is_the_gram_by_gram_filter(tmp_path: Path) -> None:
    rng = random.Random(2)
    words = ["def", "return", "x", "Ünïcode", "名前", "\t", "  ", "\n", "self.value", "\ud7ff", "é"]
    texts = ["".join(rng.choice(words) + rng.choice([" ", "\n", ""]) for _ in range(rng.randint(0, 400)))
             for _ in range(60)]
    texts += [None, "", "a" * 49, "a" * 50, "b" * 99, "c" * 100, "ASCII only " * 30]
    for subset, part in (("files", texts[:40]), ("notebooks", texts[40:])):
        (tmp_path / "data" / subset).mkdir(parents=True)
        pq.write_table(pa.table({"content": pa.array(part, pa.string())}), tmp_path / "data" / subset / "a.parquet")
    build_contains_index(tmp_path)
    bits, meta = _contains_reference(tmp_path)
    assert np.array_equal(np.load(tmp_path / BITS), bits)
    assert {k: json.loads((tmp_path / META).read_text())[k] for k in meta} == meta
    assert not list((tmp_path / "index").glob("*.tmp"))  # the spilled digests are gone
    assert contains(tmp_path, texts[0] or "").found == (len(normalize(texts[0] or "")) >= 2 * NGRAM)


def _densified_reference(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int, seed: int) -> np.ndarray:
    """One-permutation MinHash with its empty bins filled attempt by attempt (the plain loop)."""
    sig = np.full(n_docs * num_perm, np.uint32(0xFFFFFFFF), dtype=np.uint32)
    with np.errstate(over="ignore"):
        keyed = mix64(hashes ^ (U64(seed) * _ROUND))
    bins = (((keyed >> U64(32)) * U64(num_perm)) >> U64(32)).astype(np.int64)
    np.minimum.at(sig, docs * num_perm + bins, (keyed & U64(0xFFFFFFFF)).astype(np.uint32))
    sig = sig.reshape(n_docs, num_perm)
    filled = np.zeros((n_docs, num_perm), dtype=bool)
    filled.reshape(-1)[docs * num_perm + bins] = True
    present = filled.any(axis=1)
    source = sig.copy()
    for d in np.flatnonzero(present):
        for j in np.flatnonzero(~filled[d]):
            for attempt in range(1, 9 * num_perm + 1):
                if attempt > 8 * num_perm:
                    cand = (j + attempt - 8 * num_perm) % num_perm
                else:
                    with np.errstate(over="ignore"):
                        probe = mix64(np.array([U64(j) * _ROUND + U64(attempt) * _M2 + U64(seed)]))[0]
                    cand = int((probe >> U64(32)) * U64(num_perm) >> U64(32))
                if filled[d, cand]:
                    sig[d, j] = source[d, cand]
                    break
    return sig


def test_densified_signatures_are_the_attempt_by_attempt_ones() -> None:
    rng = np.random.default_rng(3)
    for num_perm, seed in ((64, 42), (16, 7), (2, 0)):
        counts = rng.integers(0, 120, 12)
        counts[:3] = (0, 1, 2)  # no shingle, and nearly every bin empty
        docs = np.repeat(np.arange(len(counts)), counts)
        hashes = rng.integers(0, 2**63, len(docs), dtype=np.uint64)
        got = one_permutation_minhash(hashes, docs, len(counts), num_perm, seed)
        assert np.array_equal(got, _densified_reference(hashes, docs, len(counts), num_perm, seed)), num_perm


def test_partition_reads_follow_a_rewritten_map_file(tmp_path: Path) -> None:
    keys = np.arange(20, dtype=np.uint64)
    write_partitions(tmp_path / "map" / "000000", 0, keys, keys.astype(np.int64), 4)
    assert read_partition(tmp_path, 1, np.dtype(np.int64)).tolist() == [1, 5, 9, 13, 17]
    write_partitions(tmp_path / "map" / "000000", 0, keys[:6], -keys[:6].astype(np.int64), 4)  # a redone unit
    assert read_partition(tmp_path, 1, np.dtype(np.int64)).tolist() == [-1, -5]


def _unit_tables(rng: random.Random, n_tables: int) -> list[pa.Table]:
    """Tables as a unit's last phase may hand them over: chunked in several ways, columns chunked differently."""
    out = []
    for _ in range(n_tables):
        n = rng.randint(1, 12)
        rows = [{"path": f"f{rng.random():.6f}.py", "content": f"x = {rng.randint(0, 9)}\n" * rng.randint(1, 35_000),
                 "lang": rng.choice(["Python", None]), "licenses": rng.choice([["MIT"], [], None])} for _ in range(n)]
        table = from_records(rows)
        table = table.set_column(table.schema.get_field_index("size"), "size",
                                 pa.array([len(r["content"]) for r in rows], pa.int64()))
        cut = rng.randint(0, n)
        if rng.random() < 0.5:  # every column in two chunks (one may be empty)
            table = pa.concat_tables([table.slice(0, cut), table.slice(cut)])
        if rng.random() < 0.5:  # one column chunked unlike the others
            i = table.schema.get_field_index("content")
            column = table.column(i).combine_chunks()
            halves = [column.slice(0, cut // 2), column.slice(cut // 2)]
            table = table.set_column(i, "content", pa.chunked_array(halves))
        out.append(conform(table, FILES_SCHEMA))
    return out


def test_shards_from_staged_arrow_are_the_parquet_units_shards(tmp_path: Path) -> None:
    # the last phase stages Arrow and encodes Parquet once, in the shards: the same bytes as writing each unit's
    # Parquet file and then its shards
    rng = random.Random(4)
    units = [_unit_tables(rng, rng.randint(1, 4)) for _ in range(8)] + [[]]  # the last: a unit that kept nothing
    rows = [{"path": f"{i}.py", "content": "y" * rng.randint(0, 5000) + str(i), "size": 1} for i in range(3000)]
    big = from_records(rows)  # pages hold more than a chunk here: where the content column's chunks end matters
    column = big.column("content").combine_chunks()
    big = big.set_column(big.schema.get_field_index("content"), "content", pa.chunked_array(
        [column.slice(0, 1000), column.slice(1000, 7), column.slice(1007)]))
    parquet_files, arrow_files = [], []
    for i, tables in enumerate(units):
        parquet_files.append(tmp_path / "pq" / f"{i}" / "kept.parquet")
        _write_parquet(parquet_files[-1], iter(tables), FILES_SCHEMA, durable=False)
        arrow_files.append(tmp_path / "arrow" / f"{i}" / "kept.arrow")
        assert _write_arrow(arrow_files[-1], iter(tables), FILES_SCHEMA) == sum(t.num_rows for t in tables)
        for columns in (None, ["size"], ["content", "path"]):
            want, got = read_parquet(parquet_files[-1], columns), read_unit(arrow_files[-1], columns)
            assert got.equals(want) and _chunks(got) == _chunks(want)
    sizes = [sum(t.num_rows for t in tables) for tables in units]
    for name, tables in (("big", [big]),):
        _write_parquet(tmp_path / "pq" / name / "kept.parquet", iter(tables), FILES_SCHEMA, durable=False)
        _write_arrow(tmp_path / "arrow" / name / "kept.arrow", iter(tables), FILES_SCHEMA)
    for max_bytes in (1, 500_000, 3_000_000, 10**9):  # a shard per row … one shard
        want = write_shards(parquet_files, tmp_path / f"want-{max_bytes}", FILES_SCHEMA, max_bytes)
        got = write_shards(arrow_files, tmp_path / f"got-{max_bytes}", FILES_SCHEMA, max_bytes)
        assert [p.name for p in got] == [p.name for p in want]
        assert [p.read_bytes() for p in got] == [p.read_bytes() for p in want], max_bytes
    whole = [(parquet_files[i], arrow_files[i]) for i, n in enumerate(sizes) if n]
    whole.append((tmp_path / "pq" / "big" / "kept.parquet", tmp_path / "arrow" / "big" / "kept.arrow"))
    for i, (parquet_file, arrow_file) in enumerate(whole):  # a shard that is exactly one unit's file
        linked = write_shards([parquet_file], tmp_path / f"linked-unit{i}", FILES_SCHEMA, 10**9)
        assert linked[0].stat().st_nlink == 2  # an input shard kept whole (a verb's) is linked, not re-encoded
        want = write_shards([parquet_file], tmp_path / f"want-unit{i}", FILES_SCHEMA, 10**9, transform=lambda t: t)
        got = write_shards([arrow_file], tmp_path / f"got-unit{i}", FILES_SCHEMA, 10**9)
        assert got[0].read_bytes() == want[0].read_bytes(), i
    assert any(n > 1 for n in sizes) and 0 in sizes


def test_gated_assignments_are_every_named_and_positional_one() -> None:
    # assigned_secrets runs `named` only on lines with a separator, `<`, `ENV` or `setenv`: it finds nothing elsewhere
    rng = random.Random(5)
    parts = ["password", "API_KEY", "token", " ", "\t", '"', "'", "s3cr3tV4lue9", "ENV", "setenv", "=", ":", ",",
             "</", "<password>", "</password>", "export ", "x", "-", ".", "://u:", "@h", "-p"]
    lines = ["".join(rng.choice(parts) for _ in range(rng.randint(1, 9))) for _ in range(20_000)]
    lines += ["ENV DB_PASSWORD hunter2hunter2", "setenv API_TOKEN Zx9vQ2mL8pR4", "<password>s3cr3tV4lue9</password>"]
    found = 0
    for line in lines:
        want = [*named(line), *positional(line, line.lower())]
        assert list(assigned_secrets(line)) == want, line
        found += bool(want)
    assert all(list(named(line)) for line in lines[-3:])
    assert found > 50
