"""Dedup's batched paths give exactly what the plain ones give: shingle hashes, content keys, map files."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from codefoundry.data.dedup import minhash
from codefoundry.data.dedup.exact import content_keys
from codefoundry.data.dedup.minhash import shingle_hashes, token_hashes
from codefoundry.data.dedup.near import REASON, NearDedup, NearDedupConfig
from codefoundry.data.dedup.partitions import _read_header, map_files, read_extra, read_partition, write_partitions
from codefoundry.data.pipeline import UnitContext
from conftest import stdlib_files

MASK = (1 << 64) - 1
M1, M2, ROUND = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    x ^= x >> 30
    x = x * M1 & MASK
    x ^= x >> 27
    x = x * M2 & MASK
    return x ^ (x >> 31)


def _token_hash(token: bytes) -> int:
    """The hash `token_hashes` documents, one Python int at a time: length, then 8 little-endian bytes a round."""
    h = len(token) * ROUND & MASK
    for i in range(0, len(token), 8):
        h = (h ^ int.from_bytes(token[i:i + 8], "little")) * M1 & MASK
    return _mix(h)


def _plain_shingles(texts: list[str], ngram: int) -> tuple[list[int], list[int]]:
    weights = [_mix(k) for k in range(1, ngram + 1)]
    hashes, docs = [], []
    for d, text in enumerate(texts):
        tokens = [_token_hash(m.group()) for m in re.finditer(rb"[A-Za-z0-9_]+", text.encode("utf-8", "surrogatepass"))]
        for i in range(len(tokens) - ngram + 1):
            hashes.append(_mix(sum(t * w for t, w in zip(tokens[i:i + ngram], weights, strict=True)) & MASK))
            docs.append(d)
    return hashes, docs


def _texts() -> list[str]:
    rng = random.Random(7)
    real = list(stdlib_files("textwrap.py", "heapq.py").values())
    boundary = [" ".join("x" * n for n in (1, 7, 8, 9, 15, 16, 17, 24, 25, 64)), "y" * 8, "z" * 9, "w" * 17]
    odd = ["", "é", "naïve café_1 résumé über 東京 tokyo_2 𝔘nicode x1 x2 x3", "\0\0 a b c d e f \0", "a b c d",
           "a b c d e", "_ _ _ _ _ _", "tab\tsep\tline\nnew line here", "emoji 😀 between tokens 😀 ok yes no",
           "lone \ud800 surrogate in text a b c"]
    generated = ["".join(rng.choice("ab_9 é.\n(") for _ in range(rng.randrange(0, 300))) for _ in range(40)]
    return real + boundary + odd + generated


@pytest.mark.parametrize("ngram", [5, 3, 1])
def test_shingle_hashes_are_the_token_by_token_ones(ngram: int) -> None:
    texts = _texts()
    want_h, want_d = _plain_shingles(texts, ngram)
    hashes, docs = shingle_hashes(texts, ngram)
    assert hashes.tolist() == want_h and docs.tolist() == want_d
    arrow_texts = [t for t in texts if "\ud800" not in t]  # Arrow holds valid UTF-8 only
    want_h, want_d = _plain_shingles(arrow_texts, ngram)
    for column in (pa.array(arrow_texts), pa.chunked_array([arrow_texts[:5], arrow_texts[5:]]),
                   pa.array(arrow_texts, pa.large_string())):
        hashes, docs = shingle_hashes(column, ngram)
        assert hashes.tolist() == want_h and docs.tolist() == want_d


def test_arrow_nulls_slices_and_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [t for t in _texts() if "\ud800" not in t]
    with_nulls = [None if i % 4 == 1 else t for i, t in enumerate(texts)]
    column = pa.array(with_nulls)
    for lo, n in ((0, len(texts)), (3, 20), (len(texts) - 1, 1), (5, 0)):
        part = column.slice(lo, n)
        want_h, want_d = _plain_shingles([t or "" for t in part.to_pylist()], 5)
        hashes, docs = shingle_hashes(part, 5)
        assert hashes.tolist() == want_h and docs.tolist() == want_d
    want = shingle_hashes(column, 5)
    monkeypatch.setattr(minhash, "CHUNK_BYTES", 40)  # many chunks, one long document alone in its chunk
    got = shingle_hashes(column, 5)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    with pytest.raises(TypeError):
        shingle_hashes(pa.array([1, 2]), 5)


def test_token_hashes_of_edges() -> None:
    for raw in (b"a", b"abc", b" abc", b"abc ", b" ", b"x" * 20, b"ab cd", b"\xc3\xa9t\xc3\xa9 x", b""):
        found = list(re.finditer(rb"[A-Za-z0-9_]+", raw))
        # the padding the caller leaves (none, too little for the 8-byte loads, enough) is never part of a token
        for padding in (0, 3, 8, 11):
            hashes, starts = token_hashes(raw + bytes(padding), padding=padding)
            assert hashes.tolist() == [_token_hash(m.group()) for m in found]
            assert starts.tolist() == [m.start() for m in found]
    hashes, _ = token_hashes(b"abcdefghij" + b"klmnopqr", padding=8)  # bytes past the text are not read as its
    assert hashes.tolist() == [_token_hash(b"abcdefghij")]


def _plain_keys(batch: pa.Table) -> tuple[list[int], list[int]]:
    shas, contents = batch.column("hexsha").to_pylist(), batch.column("content").to_pylist()
    hexes = [s if s else hashlib.sha1((c or "").encode("utf-8", "surrogatepass")).hexdigest()
             for s, c in zip(shas, contents, strict=True)]
    return [int(h[:16], 16) for h in hexes], [int(h[16:32], 16) for h in hexes]


def test_content_keys_are_the_parsed_hex_digits() -> None:
    rng = random.Random(3)
    shas = ["".join(rng.choice("0123456789abcdef") for _ in range(40)) for _ in range(50)]
    contents = [f"text {i} é" for i in range(50)]
    shas[3], shas[4], shas[5], shas[6] = None, "", "ABCDEF0123456789abcdef0123456789FFFFFFFF", "0" * 32
    tables = [pa.table({"hexsha": shas, "content": contents})]
    tables.append(tables[0].slice(7, 20))
    tables.append(pa.table({"hexsha": pa.chunked_array([shas[:10], shas[10:]]),
                            "content": pa.chunked_array([contents[:10], contents[10:]])}).slice(2))
    tables.append(pa.table({"hexsha": ["0x" + "1" * 30, "f" * 40], "content": ["a", "b"]}))  # int() reads "0x"
    tables.append(tables[0].slice(0, 0))
    for table in tables:
        k1, k2 = content_keys(table)
        want1, want2 = _plain_keys(table)
        assert k1.dtype == np.uint64 and k1.tolist() == want1 and k2.tolist() == want2


def test_extra_arrays_come_back_as_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = np.zeros(50, dtype=[("key", "<u8"), ("id", "<i8")])
    records["key"], records["id"] = rng.integers(0, 2**63, 50, dtype=np.uint64), np.arange(50)
    ranks = np.zeros(7, dtype=[("id", "<i8"), ("license", "<i8")])
    ranks["id"] = np.arange(7)
    big = rng.integers(0, 2**63, 150_000, dtype=np.uint64)  # over MMAP_MIN_BYTES: mapped when asked
    extra = [ranks, np.arange(5, dtype=np.uint64), np.empty(0, np.uint64), rng.integers(0, 9, (3, 4)), big]
    for n_records in (50, 0):
        map_dir = tmp_path / f"s{n_records}" / "map" / "000000"
        write_partitions(map_dir, 0, records["key"][:n_records], records[:n_records], 4, extra)
        path = map_dir / "parts-0000000000.npy"
        for mmap in (False, True):
            got = read_extra(path, mmap=mmap)
            assert len(got) == len(extra)
            assert all(g.dtype == e.dtype and np.array_equal(g, e) for g, e in zip(got, extra, strict=True))
            for first in (1, 3):  # only the first arrays (the rank records without the shingle sets)
                got = read_extra(path, mmap=mmap, first=first)
                assert len(got) == first and all(np.array_equal(g, e) for g, e in zip(got, extra, strict=False))
        parts = [read_partition(tmp_path / f"s{n_records}", p, records.dtype) for p in range(4)]
        assert sorted(np.concatenate(parts)["id"].tolist()) == list(range(n_records))
    write_partitions(tmp_path / "plain" / "000000", 0, records["key"], records, 2)
    assert read_extra(tmp_path / "plain" / "000000" / "parts-0000000000.npy") == []


def _plain_one_permutation(hashes: list[int], docs: list[int], n_docs: int, num_perm: int,
                           seed: int) -> list[list[int]]:
    sig = [[0xFFFFFFFF] * num_perm for _ in range(n_docs)]
    filled = [[False] * num_perm for _ in range(n_docs)]
    for h, d in zip(hashes, docs, strict=True):
        keyed = _mix(h ^ (seed * ROUND & MASK))
        j = ((keyed >> 32) * num_perm) >> 32
        sig[d][j], filled[d][j] = min(sig[d][j], keyed & 0xFFFFFFFF), True
    probes = [[((_mix((j * ROUND + t * M2 + seed) & MASK) >> 32) * num_perm) >> 32 for t in range(1, 8 * num_perm + 1)]
              + [(j + t) % num_perm for t in range(1, num_perm + 1)] for j in range(num_perm)]
    for d in set(docs):
        base = list(sig[d])
        for j in range(num_perm):
            if not filled[d][j]:
                sig[d][j] = base[next(c for c in probes[j] if filled[d][c])]
    return sig


@pytest.mark.parametrize("num_perm", [16, 64])
def test_one_permutation_signatures_are_the_shingle_by_shingle_ones(num_perm: int) -> None:
    texts = _texts()[:30]
    hashes, docs = shingle_hashes(texts, 5)
    sig, has = minhash.signatures_of(hashes, docs, len(texts), num_perm, seed=42)
    want = _plain_one_permutation(hashes.tolist(), docs.tolist(), len(texts), num_perm, 42)
    assert sig.tolist() == want
    assert has.tolist() == [d in set(docs.tolist()) for d in range(len(texts))]


def test_map_files_are_the_sorted_glob(tmp_path: Path) -> None:
    for rel in ("map/000002/parts-0000000000.npy", "map/000002/parts-0000002048.npy", "map/000000/parts-0000000000.npy",
                "map/000000/.parts-0000004096.npy.77.tmp", "map/.hidden/parts-0000000000.npy", "map/000001/other.npy",
                "map/000010/parts-0000000000.npy", "map/stray-file"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert map_files(tmp_path) == sorted((tmp_path / "map").glob("*/parts-*.npy"))
    assert map_files(tmp_path, "000002") == sorted((tmp_path / "map" / "000002").glob("parts-*.npy"))
    assert map_files(tmp_path, "000009") == [] and map_files(tmp_path / "nothing") == []


def test_npy_headers_read_as_numpy_reads_them(tmp_path: Path) -> None:
    arrays = [np.zeros(3, dtype=[("key", "<u8"), ("id", "<i8")]), np.arange(5), np.zeros((3, 4)),
              np.empty(0, np.uint64), np.asfortranarray(np.ones((2, 3))), np.array(7),
              np.zeros(2, dtype=[("shape", "<i8"), ("x", "<f4", (2,))]), np.zeros((0, 5), np.int32),
              np.zeros(70_000, np.uint8)]
    path = tmp_path / "many.npy"
    with open(path, "wb") as f:
        for a in arrays:
            np.lib.format.write_array(f, a, allow_pickle=False)
    with open(path, "rb") as ours, open(path, "rb") as numpys:
        for a in arrays:
            want = np.lib.format.read_array_header_1_0(numpys) if np.lib.format.read_magic(numpys) == (1, 0) \
                else np.lib.format.read_array_header_2_0(numpys)
            assert _read_header(ours) == want and ours.tell() == numpys.tell()
            ours.seek(a.nbytes, 1)
            numpys.seek(a.nbytes, 1)


def test_reduce_tasks_share_shingle_sets_until_a_map_file_changes(tmp_path: Path) -> None:
    base = next(iter(stdlib_files("textwrap.py").values()))
    near_copy = base.replace("width", "w", 4)
    far_copy = "\n".join(line for i, line in enumerate(base.splitlines()) if i % 3)  # ~0.6 Jaccard: not a dup

    def table(text: str) -> pa.Table:
        return pa.table({"content": [text], "lang": ["Python"], "license_type": ["permissive"], "stars": [1],
                         "forks": [0]})

    def edges(step: NearDedup, scratch: Path) -> list[bytes]:
        for p in range(step.num_partitions):
            step.reduce(p, scratch)
        return [(scratch / "reduce" / f"edges-{p:04d}.npy").read_bytes() for p in range(step.num_partitions)]

    shared = NearDedup(NearDedupConfig(num_partitions=2, threshold=0.7, bands=64, rows=2))
    for scratch in (tmp_path / "a", tmp_path / "b"):
        (scratch / "reduce").mkdir(parents=True)
    contexts = [UnitContext(f"{i:06d}", i, tmp_path / "a") for i in range(2)]
    shared.map(table(base), contexts[0])
    shared.map(table(near_copy), contexts[1])
    edges(shared, tmp_path / "a")
    assert any(len(np.load(tmp_path / "a" / "reduce" / f"edges-{p:04d}.npy")) for p in range(2))  # a pair
    shared.map(table(far_copy), contexts[1])  # unit 1's map file rewritten: its loaded sets are stale
    fresh = NearDedup(shared.config)
    fresh.map(table(base), UnitContext("000000", 0, tmp_path / "b"))
    fresh.map(table(far_copy), UnitContext("000001", 1, tmp_path / "b"))
    assert edges(shared, tmp_path / "a") == edges(fresh, tmp_path / "b")
    assert not any(len(np.load(tmp_path / "b" / "reduce" / f"edges-{p:04d}.npy")) for p in range(2))


def test_a_loaded_removal_set_is_reread_when_its_file_changes(tmp_path: Path) -> None:
    # load runs once per unit; a worker that already holds the removal set skips the lock, but only while the
    # file is the one it read
    step = NearDedup()
    (tmp_path / "reduce").mkdir()
    result = tmp_path / "reduce" / "remove.npy"
    batch = pa.table({"content": ["a", "b", "c"]})
    np.save(result, np.array([1], dtype=np.int64))  # unit 0, row 1
    ctx = UnitContext("000000", 0, tmp_path)
    step.load(tmp_path)
    assert list(step.filter(batch, ctx)) == [None, REASON, None]
    step.load(tmp_path)  # the same file: kept
    assert list(step.filter(batch, ctx)) == [None, REASON, None]
    np.save(result, np.array([0, 2], dtype=np.int64))  # another run's result
    step.load(tmp_path)
    assert list(step.filter(batch, UnitContext("000000", 0, tmp_path))) == [REASON, None, REASON]
    assert list(step.filter(batch, UnitContext("000001", 1, tmp_path))) == [None, None, None]  # no duplicate here


def test_partition_reads_equal_the_records_of_each_partition(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    dtype = np.dtype([("key", "<u8"), ("id", "<i8")])
    written = []
    for unit, size in enumerate((0, 1, 7, 300)):  # empty files, one record, partitions without records
        records = np.zeros(size, dtype)
        records["key"] = rng.integers(0, 2**64 - 1, size, dtype=np.uint64)
        records["id"] = np.arange(size) + 1000 * unit
        write_partitions(tmp_path / "map" / f"{unit:06d}", 0, records["key"], records, 5)
        written.append(records)
    for p in range(5):
        expected = np.concatenate([r[(r["key"] % np.uint64(5)).astype(np.int64) == p] for r in written])
        got = read_partition(tmp_path, p, dtype)
        assert got.dtype == dtype and got.tolist() == expected.tolist()
    path = tmp_path / "map" / "000003" / "parts-0000000000.npy"
    path.write_bytes(path.read_bytes()[:-16])  # the last partition's records cut short: an error, not fewer rows
    with pytest.raises(ValueError, match="truncated"):
        [read_partition(tmp_path, p, dtype) for p in range(5)]
