"""The indexes' cheaper build paths give what the plain ones gave: non-ASCII texts' n-grams cut over one UTF-8
buffer, boolean columns read from their bitmaps, the Bloom filter filled through a bool mask; and the search
index's format 2 (FTS5 'hashsize') answers every kind of query exactly as format 1 did."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codefoundry.data.contains import (
    _ASCII_FOLD,
    DIGESTS,
    HASH,
    WIDE_SPACES,
    BloomFilter,
    _digest_positions,
    _file_grams,
    _split,
    _true,
    _utf8_grams,
    column_digests,
)
from codefoundry.data.finalize import build_indexes
from codefoundry.data.pipeline import conform
from codefoundry.data.pipeline.executor import _write_arrow, _write_parquet
from codefoundry.data.pipeline.schema import FILES_SCHEMA, from_records
from codefoundry.data.search import FORMAT, INDEX, build_search_index, search
from conftest import stdlib_files

# beside every space: characters whose UTF-8 starts as a space's does (0xC2, 0xE1-0xE3) but that are not spaces
NEAR_SPACES = ["\x84", "\x86", "\xa1", "\xa9", "\u1681", "\u167f", "\u200b", "\u200c", "\u2027", "\u202a", "\u202e",
               "\u2030", "\u205e", "\u2060", "\u3001", "\u2fff", "あ", "…", "€"]
WORDS = ["def", "Return", "ΣΑΣ", "ὈΔΥΣΣΕΎΣ", "İstanbul", "\u212a", "ß", "ẞ", "ǅ", "名前", "😀", "ﬃ", "x" * 49,
         "É" * 50, "\r\n", "\x00", "a\u0301", *NEAR_SPACES]
SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", *WIDE_SPACES]


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["".join(rng.choice(WORDS) + "".join(rng.choice(SPACES) for _ in range(rng.choice([0, 1, 1, 2, 5])))
                     for _ in range(rng.randint(0, 200))) for _ in range(n)]
    texts += ["", " ", "\u3000" * 120, "\u2028 \u2029" * 40, "é" * 49, "é" * 50, "é" * 51, "😀" * 100,
              " " + "é" * 100 + "\u00a0", "é" * 49 + "\u2000" + "x" * 51, "x" * 50 + "\u205f" * 3]
    return texts


def _plain(texts: list[str]) -> list[bytes]:
    """Every `_file_grams` n-gram, encoded one by one."""
    return [g.encode("utf-8", "surrogatepass") for t in texts for g in _file_grams(t)]


def test_wide_spaces_are_every_character_str_split_cuts_at() -> None:
    assert list(WIDE_SPACES) == [chr(c) for c in range(128, 0x110000) if chr(c).isspace()]
    assert [c for c in range(128) if _ASCII_FOLD[c] == 32] == [c for c in range(128) if chr(c).isspace()]


def test_utf8_grams_are_each_texts_grams() -> None:
    texts = [*_texts(1, 400), "\ud800" * 60, "a\udfff" * 40 + "\u2000b"]  # lone surrogates too
    assert _utf8_grams(texts) == _plain(texts)
    for text in texts[:60] + texts[-13:]:  # one by one: the boundaries of a buffer's first and last text
        assert _utf8_grams([text]) == _plain([text]), text
    assert _utf8_grams([]) == [] and _utf8_grams(["", "é" * 49]) == []


@pytest.mark.parametrize("kind", ["string", "large_string", "sliced"])
def test_column_digests_of_non_ascii_texts_are_each_grams_digest(kind: str) -> None:
    texts: list[str | None] = [*_texts(2, 300), None, "plain ascii text " * 9]
    column = pa.array(texts, pa.large_string() if kind == "large_string" else pa.string())
    if kind == "sliced":
        column, texts = column.slice(13, 250), texts[13:263]
    out, n = column_digests(column)
    expected = [DIGESTS[HASH](g) for g in _plain([t or "" for t in texts])]
    assert n == len(expected) > 1000
    assert sorted(out[i:i + 16] for i in range(0, len(out), 16)) == sorted(expected)


def test_true_reads_the_bitmaps() -> None:
    rng = random.Random(3)
    values = [rng.choice([True, False, None]) for _ in range(203)]
    validity = pa.py_buffer(np.packbits(np.array([v is not None for v in values]), bitorder="little").tobytes())
    ones = pa.py_buffer(b"\xff" * 26)  # a null slot's value bit may be set: it must not count
    null_over_true = pa.Array.from_buffers(pa.bool_(), 203, [validity, ones])
    assert null_over_true.to_pylist() == [None if v is None else True for v in values]
    for flags in (pa.array(values, pa.bool_()), pa.array([v is True for v in values], pa.bool_()), null_over_true):
        for offset, length in ((0, 203), (5, 100), (13, 0), (64, 139), (3, 1)):
            part = flags.slice(offset, length)
            assert _true(part).tolist() == [v is True for v in part.to_pylist()]


@pytest.mark.parametrize(("n", "fp_rate"), [(1, 0.001), (3_000, 0.001), (20_001, 0.01)])
def test_the_mask_fill_sets_the_bits_of_the_plain_fill(n: int, fp_rate: float, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    rng = np.random.default_rng(n)
    first, second = (rng.integers(0, 256, 16 * k, dtype=np.uint8).tobytes() for k in (n, n // 3 + 1))
    plain = BloomFilter.sized(n, fp_rate)
    for digests in (first, second):
        pos = _digest_positions(*_split(digests), plain.m, plain.k).reshape(-1)
        np.bitwise_or.at(plain.bits, pos >> 3, (1 << (pos & 7)).astype(np.uint8))
    masked = BloomFilter.sized(n, fp_rate)
    masked.add_digests(first)  # a filter that already holds bits keeps them
    masked.add_digest_chunks(iter([second[:16 * 7], b"", second[16 * 7:]]))
    # a filter too large for the mask: np.bitwise_or.at
    monkeypatch.setattr(sys.modules["codefoundry.data.contains"], "MASK_BITS", 0)
    large = BloomFilter.sized(n, fp_rate)
    large.add_digest_chunks([first, second])
    assert np.array_equal(masked.bits, plain.bits) and np.array_equal(large.bits, plain.bits) and plain.bits.any()


def _format_1(dataset: Path) -> None:
    """The search index as versions before format 2 wrote it (FTS5's default 'hashsize', user_version 0)."""
    con = sqlite3.connect(dataset / INDEX)
    con.execute("CREATE VIRTUAL TABLE files USING fts5(repo, path, lang, license, content, subset UNINDEXED, "
                "tokenize='unicode61')")
    for shard in sorted((dataset / "data" / "files").glob("*.parquet")):
        d = pq.read_table(shard).to_pydict()
        con.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)", zip(
            d["repo_name"], d["path"], [x or "" for x in d["lang"]], [" ".join(x or []) for x in d["licenses"]],
            [x or "" for x in d["content"]], ["files"] * len(d["path"]), strict=True))
    con.execute("INSERT INTO files(files) VALUES ('optimize')")
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def two_formats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One dataset's rows (~3 MB: many of format 1's 1 MB flushes and merges), indexed in both formats."""
    rng = random.Random(5)
    code = stdlib_files("textwrap.py", "shlex.py", "heapq.py", "argparse.py", "difflib.py", "typing.py",
                        "inspect.py", "pathlib.py", "tarfile.py", "ipaddress.py")
    texts = [text.replace("\n", "\r\n") if i % 3 == 0 else text for i, text in enumerate(code.values())]
    texts += [" ".join(rng.choice(["Straße", "naïve", "café", "名前", "données", "ΣΑΣ", "heapq", "Returns", "x"])
                       for _ in range(rng.randint(0, 3000))) for _ in range(250)]
    texts += ["", "\n", "Ünïcode ÜNÏCODE unicode", None]
    n = len(texts)
    paths = [*code, *(f"gen/{i}.py" for i in range(n - len(code)))]
    roots = tmp_path_factory.mktemp("new"), tmp_path_factory.mktemp("old")
    for root in roots:
        (root / "data" / "files").mkdir(parents=True)
        (root / "index").mkdir()
        table = pa.table({"repo_name": [f"owner{i % 7}/repo{i % 11}" for i in range(n)], "path": paths,
                          "lang": [None if i % 9 == 0 else ["Python", "Text", "Go"][i % 3] for i in range(n)],
                          "licenses": pa.array([None if i % 5 == 0 else ["MIT", "Apache-2.0"][: i % 3]
                                                for i in range(n)], pa.list_(pa.string())),
                          "content": pa.array(texts, pa.string())})
        for k, (a, b) in enumerate(((0, 150), (150, n))):
            pq.write_table(conform(table.slice(a, b - a)), root / "data" / "files" / f"train-{k}.parquet")
    build_search_index(roots[0])
    _format_1(roots[1])
    return roots


QUERIES = ["heappush", "def", "return self", '"import sys"', "wrap OR shlex", "wrap AND NOT shlex", "heap*", "dedent",
           "lang : Python", "lang : Go AND def", "repo : owner3", "license : MIT", "license : Apache", "path : gen",
           "{repo path} : repo4", "NEAR(token split, 5)", "straße", "STRASSE", "naive", "cafe", "café", "名前", "ΣΑΣ",
           "σας", "unicode", "Ünïcode", "données", "^def", "x", "x OR heapq", "class*", "width \"", "a (b",
           "no_such_token_anywhere", "Returns heapq", "\"self . width\"", "typing", "lang : (Go OR Text) heapq"]


def test_search_format_2_answers_as_format_1(two_formats: tuple[Path, Path]) -> None:
    new, old = two_formats
    versions = [sqlite3.connect(ds / INDEX).execute("PRAGMA user_version").fetchone()[0] for ds in (new, old)]
    assert versions == [FORMAT, 0] and FORMAT == 2
    assert (new / INDEX).read_bytes() != (old / INDEX).read_bytes()  # two formats indeed
    found = 0
    for i, query in enumerate(QUERIES):
        for limit in (10, 1000) if i % 5 == 0 else (10,):  # all hits' snippets cost: some queries only
            hits = search(new, query, limit)
            assert hits == search(old, query, limit), (query, limit)
            found += bool(hits)
    assert found >= 35  # most queries find something
    sql = ("SELECT rowid, bm25(files), bm25(files, 1.0, 2.0, 0.5, 0.1, 3.0), highlight(files, 4, '<', '>'), "
           "snippet(files, -1, '[', ']', '…', 8) FROM files WHERE files MATCH ? ORDER BY bm25(files), rowid")
    for query in ("def", "heap*", "lang : Python", "café", "return self", "x"):
        rows = [sqlite3.connect(ds / INDEX).execute(sql, (query,)).fetchall() for ds in (new, old)]
        assert rows[0] == rows[1] and rows[0], query  # scores equal to the last bit, and every row's text


def test_building_the_indexes_imports_no_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas (a quarter of a second) for `to_numpy` of a boolean array, `pa.scalar` and
    `Schema.empty_table`: the indexes' build uses none of them."""
    rows = [{"repo_name": "o/r", "path": f"{i}.py", "content": [None, "ünï " * 40, "ascii " * 30][i % 3],
             "lang": None, "licenses": None} for i in range(30)]
    _write_arrow(tmp_path / "u0.arrow", iter([from_records(rows)]), FILES_SCHEMA)
    _write_arrow(tmp_path / "u1.arrow", iter([]), FILES_SCHEMA)
    script = f"""
import sys
from pathlib import Path
from codefoundry.data.finalize import build_indexes
before = {{m for m in ("pandas", "numpy.ma") if m in sys.modules}}
root = Path({str(tmp_path)!r})
build_indexes(root / "ds", {{"files": [root / "u0.arrow", root / "u1.arrow"]}})
print(sorted({{m for m in ("pandas", "numpy.ma") if m in sys.modules}} - before))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert search(tmp_path / "ds", "ünï")


def test_indexes_from_an_older_works_parquet_units_are_the_same(tmp_path: Path) -> None:
    """A `.work` from before units were staged as Arrow holds `kept.parquet` files: the indexes read them too."""
    rows = [{"repo_name": f"o/r{i % 3}", "path": f"{i}.py", "content": t, "lang": "Python" if i % 2 else None,
             "licenses": ["MIT"] if i % 3 else None} for i, t in enumerate([None, *_texts(4, 40)])]
    files = {}
    for suffix, write in ((".arrow", _write_arrow), (".parquet", _write_parquet)):
        files[suffix] = [tmp_path / f"u{k}{suffix}" for k in range(2)]
        write(files[suffix][0], iter([from_records(rows[:17]), from_records(rows[17:])]), FILES_SCHEMA)
        write(files[suffix][1], iter([from_records(rows[:5])]), FILES_SCHEMA)
    for suffix, units in files.items():
        build_indexes(tmp_path / suffix, {"files": units}, batch_rows=8)
    for path in (INDEX, Path("index") / "contains.bloom.npy", Path("index") / "contains.json"):
        assert (tmp_path / ".arrow" / path).read_bytes() == (tmp_path / ".parquet" / path).read_bytes()
    assert search(tmp_path / ".parquet", "ΣΑΣ")
