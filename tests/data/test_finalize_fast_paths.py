"""Finalizing's cheaper paths give what the plain ones gave: the membership index's n-gram digests, its filter
fill, the indexes built from one read of the shards, decontamination's normalising; and the membership index's
format 2 (xxh3-128) answers as format 1 (blake2b-128) did, at the same false-positive rate."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codefoundry.data import decontam
from codefoundry.data.contains import (
    BITS,
    DIGESTS,
    HASH,
    LEGACY_HASH,
    META,
    NGRAM,
    BloomFilter,
    _digest_positions,
    _file_grams,
    _split,
    build_contains_index,
    contains,
    content_digests,
    load_bloom,
)
from codefoundry.data.finalize import build_indexes
from codefoundry.data.pipeline.executor import _write_arrow, write_shards
from codefoundry.data.pipeline.schema import FILES_SCHEMA, from_records
from codefoundry.data.search import INDEX, build_search_index, search
from codefoundry.errors import ArtifactError

SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2000", "\u3000"]
WORDS = ["def", "Return", "X", "self.VALUE", "Ünïcode", "名前", "é", "\ud800", "\x00", "A" * 60, "{", "}"]


def _texts(seed: int, n: int) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = []
    for _ in range(n):
        words = WORDS if rng.random() < 0.3 else [w for w in WORDS if w.isascii()]
        spaces = SPACES if rng.random() < 0.3 else SPACES[:10]
        texts.append("".join(rng.choice(words) + "".join(rng.choice(spaces) for _ in range(rng.randint(0, 3)))
                             for _ in range(rng.randint(0, 300))))
    texts += [None, "", " ", "\n\n\t", "\x1c" * 80]
    texts += ["x" * k for k in (49, 50, 51, 99, 100, 101)]
    texts += [" " * 3 + "y" * k + "\n" * 2 for k in (49, 50, 100, 150)]
    texts += ["é" * k for k in (49, 50, 101)]
    return texts


def _grams_digests(texts: list[str | None], digest: str) -> list[bytes]:
    """The plain way: every `_file_grams` n-gram, encoded and hashed one by one."""
    return [DIGESTS[digest](g.encode("utf-8", "surrogatepass")) for t in texts for g in _file_grams(t or "")]


@pytest.mark.parametrize("digest", [HASH, LEGACY_HASH])
def test_content_digests_are_each_grams_digest(digest: str) -> None:
    texts = _texts(1, 400)
    out, n = content_digests(texts, digest)
    expected = _grams_digests(texts, digest)
    assert n == len(expected) > 1000
    assert sorted(out[i:i + 16] for i in range(0, len(out), 16)) == sorted(expected)
    ascii_only = [t for t in texts if t is None or t.isascii()]
    out, n = content_digests(ascii_only, digest)
    assert sorted(out[i:i + 16] for i in range(0, len(out), 16)) == sorted(_grams_digests(ascii_only, digest))
    assert content_digests([], digest) == (b"", 0) and content_digests([None, "", "a" * 49], digest) == (b"", 0)


@pytest.mark.parametrize(("n", "fp_rate"), [(1, 0.001), (1_000, 0.001), (5_000, 0.01), (33_333, 0.0001)])
def test_add_digests_sets_the_positions_bits(n: int, fp_rate: float) -> None:
    rng = np.random.default_rng(n)
    digests = rng.integers(0, 256, 16 * n, dtype=np.uint8).tobytes()
    fast = BloomFilter.sized(n, fp_rate)
    fast.add_digests(digests)
    plain = BloomFilter.sized(n, fp_rate)
    pos = _digest_positions(*_split(digests), plain.m, plain.k).reshape(-1)
    np.bitwise_or.at(plain.bits, pos >> 3, (1 << (pos & 7)).astype(np.uint8))
    assert plain.m % 8 or n < 5_000  # sizes that end mid-byte are among these
    assert np.array_equal(fast.bits, plain.bits) and fast.bits.any()


def _dataset(root: Path, texts: list[str | None]) -> Path:
    """A dataset's data/ folder: files and notebooks subsets, two shards of files."""
    n = len(texts)
    parts = {("files", "train-00000-of-00002"): texts[: n // 3], ("files", "train-00001-of-00002"):
             texts[n // 3: 2 * n // 3], ("notebooks", "train-00000-of-00001"): texts[2 * n // 3:]}
    for (subset, name), part in parts.items():
        (root / "data" / subset).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "repo_name": [f"o/r{i % 7}" for i in range(len(part))], "path": [f"p{i}.py" for i in range(len(part))],
            "lang": [None if i % 5 == 0 else "Python" for i in range(len(part))],
            "licenses": [None if i % 4 == 0 else ["MIT", "Apache-2.0"][: i % 3] for i in range(len(part))],
            "content": pa.array(part, pa.string())}), root / "data" / subset / f"{name}.parquet")
    return root


def test_indexes_from_one_read_are_the_separate_builds(tmp_path: Path) -> None:
    texts = [t and t.replace("\ud800", "\ud7ff") for t in _texts(2, 300)]  # Arrow holds no lone surrogate
    one = _dataset(tmp_path / "one", texts)
    two = _dataset(tmp_path / "two", texts)
    build_indexes(one, batch_rows=37)
    build_search_index(two)
    build_contains_index(two)
    for path in (INDEX, BITS, META):
        assert (one / path).read_bytes() == (two / path).read_bytes(), path
    assert sorted(p.name for p in (one / "index").iterdir()) == ["contains.bloom.npy", "contains.json", "search.sqlite"]
    assert search(one, "self.value")  # the index answers
    assert json.loads((one / META).read_text())["hash"] == HASH


def test_indexes_from_the_staged_units_are_the_shards_indexes(tmp_path: Path) -> None:
    """Finalize feeds the indexes the staged unit files its shards were written from: the same index bytes."""
    texts = [t and t.replace("\ud800", "\ud7ff") for t in _texts(6, 240)]
    staged: dict[str, list[Path]] = {}
    for subset, lo, hi in (("notebooks", 0, 50), ("files", 50, 200), ("commits", 200, len(texts))):
        for unit, (a, b) in enumerate([(lo, lo + 7), (lo + 7, lo + 7), (lo + 7, hi)]):  # an empty unit among them
            rows = [{"repo_name": f"o/r{i % 3}", "path": f"{subset}/{i}.py", "content": texts[i],
                     "size": len((texts[i] or "").encode("utf-8", "surrogatepass")),
                     "lang": "Python" if i % 2 else None, "licenses": ["MIT"] if i % 3 else None} for i in range(a, b)]
            path = tmp_path / "work" / subset / f"{unit}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_arrow(path, iter([from_records(rows[:3]), from_records(rows[3:])]), FILES_SCHEMA)
            staged.setdefault(subset, []).append(path)
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        for subset, files in staged.items():
            write_shards(files, root / "data" / subset, FILES_SCHEMA, max_bytes=3_000)
    assert len(list((one / "data" / "files").glob("*.parquet"))) > 2
    build_indexes(one, staged, batch_rows=16)
    build_search_index(two)
    build_contains_index(two)
    for path in (INDEX, BITS, META):
        assert (one / path).read_bytes() == (two / path).read_bytes(), path


def _legacy_index(dataset: Path, texts: list[str | None]) -> None:
    """A format-1 membership index, as versions before format 2 wrote it (no "hash" in contains.json)."""
    grams = [g for t in texts for g in _file_grams(t or "")]
    bloom = BloomFilter.sized(len(grams), digest=LEGACY_HASH)
    bloom.add(grams)
    np.save(dataset / BITS, bloom.bits)
    (dataset / META).write_text(json.dumps({"m": bloom.m, "k": bloom.k, "n": len(grams), "ngram": NGRAM,
                                            "stride": NGRAM, "fp_rate": 0.001}))


def test_format_2_answers_as_format_1(tmp_path: Path) -> None:
    rng = random.Random(3)
    texts = ["\n".join(f"    value_{rng.randrange(10**9)} = compute({rng.random():.12f}, 'ünï')"
                       for _ in range(rng.randint(5, 60))) for _ in range(300)]
    new = _dataset(tmp_path / "new", texts)
    build_contains_index(new)
    old = _dataset(tmp_path / "old", texts)
    (old / "index").mkdir()
    _legacy_index(old, texts)
    assert load_bloom(old).digest == LEGACY_HASH and load_bloom(new).digest == HASH
    members = [t[a: a + size] for t in texts[:60] for a, size in ((0, 400), (37, 150), (5, len(t)))]
    others = ["\n".join(f"other_{rng.randrange(10**9)} = x({rng.random()})" for _ in range(20)) for _ in range(60)]
    mixed = [m[:200] + o[:200] for m, o in zip(members, others, strict=False)]
    answers = {}
    for name, ds in (("new", new), ("old", old)):
        answers[name] = [(m.found, m.spans, m.windows) for q in members + others + mixed
                         for m in [contains(ds, q)]]
    assert answers["new"] == answers["old"]
    assert all(found for found, _, _ in answers["new"][: len(members)])
    assert not any(found for found, _, _ in answers["new"][len(members): len(members) + len(others)])


def test_format_2_false_positive_rate() -> None:
    """Absent n-grams test present at the rate the filter was sized for, as with format 1's digest."""
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz(){}=.:_0123456789", np.uint8)
    text = alphabet[np.random.default_rng(4).integers(0, len(alphabet), 250_000 * NGRAM)].tobytes().decode()
    grams = list(dict.fromkeys(text[i:i + NGRAM] for i in range(0, len(text), NGRAM)))
    stored, absent = grams[:20_000], grams[20_000:]
    for digest in (HASH, LEGACY_HASH):
        bloom = BloomFilter.sized(len(stored), digest=digest)
        bloom.add(stored)
        assert bloom.contains(stored).all()
        rate = bloom.contains(absent).mean()
        assert 0.0005 < rate < 0.0016, (digest, rate)  # sized for 0.001; ~230,000 absent n-grams
        assert abs(bloom.false_positive_rate - 0.001) < 0.0003


def test_an_index_of_an_unknown_hash_is_a_clear_error(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, ["x" * 200])
    build_contains_index(ds)
    meta = json.loads((ds / META).read_text())
    (ds / META).write_text(json.dumps({**meta, "hash": "sha3-9000"}))
    with pytest.raises(ArtifactError, match="sha3-9000"):
        load_bloom(ds)


def test_decontam_normalize_ascii_is_the_str_path() -> None:
    def plain(text: str) -> str:
        return "".join(text.lower().split())

    for c in range(128):
        text = f" A{chr(c)}b{chr(c)}{chr(c)}Z \x1c"
        assert decontam.normalize(text) == plain(text), c
    for text in _texts(5, 200):
        assert decontam.normalize(text or "") == plain(text or "")


def _vendor_paths() -> list[str]:
    """Paths made of every pattern's own words, at the root, deeper, glued to other names, in other cases."""
    rng = random.Random(7)
    words = ["node_modules", "vendor", "vendors", "_vendor", "third_party", "ThirdParty", "3rd-party", "extern",
             "external", "deps", "Godeps/_workspace", "Pods", ".venv", "site-packages", ".git", "cache", "dist",
             "jquery.min.js", "jquery-3.js", "bootstrap.min.css", "bootstrap-theme.less", "lodash.min.js", "d3.js",
             "gradlew", "gradlew.bat", "mvnw.cmd", "gradle/wrapper", ".mvn/wrapper", "config.guess", "ltmain.sh",
             "install-sh", "missing", "x-vsdoc.js", "a.intellisense.js", "app.min.js", "a-min.css", "b.js.map",
             "package-lock.json", "yarn.lock", "Cargo.lock", "go.sum", "x_pb2.py", "x_pb2_grpc.pyi", "a.pb.go",
             "a.pb.gw.go", "a_grpc.pb.go", "Form.designer.cs", "m.g.dart", "m.freezed.dart", "__generated__",
             "P.xcodeproj", ".pnp.cjs", "z_generated.go", "q.generated.ts", "src", "lib", "main.py", "README.md",
             "Vendor", "vendorx", "xvendor", "node_modules2", "site-packages.py", "", "/"]
    paths = ["/".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in range(20_000)]
    paths += [w + suffix for w in words for suffix in ("", "/", "/a.py", "x", ".py")]
    paths += ["/" + p for p in paths[:3000]] + [p.upper() for p in paths[:2000]]
    return paths


def test_vendor_paths_match_as_the_plain_alternations() -> None:
    from codefoundry.data import vendor

    plain_vendor = re.compile("|".join(vendor.VENDOR_PATTERNS))
    plain_generated = re.compile("|".join(vendor.GENERATED_PATHS))
    paths = _vendor_paths()
    found = [vendor.is_vendor(p) for p in paths]
    assert found == [plain_vendor.search(p) is not None for p in paths]
    assert 0.2 < sum(found) / len(found) < 0.95
    generated = [vendor.is_generated(p) for p in paths]
    assert generated == [plain_generated.search(p) is not None for p in paths]
    assert 0.1 < sum(generated) / len(generated) < 0.95


def test_generated_markers_are_found_as_by_the_regex_alone() -> None:
    from codefoundry.data import vendor

    markers = ["// Code generated by protoc-gen-go. DO NOT EDIT.", "# @generated", "@generatedx", "/* @generated */",
               "// Generated by the protocol buffer compiler.  DO NOT EDIT!", "/* Generated by Cython 3.0 */",
               "This file was automatically generated by SWIG", "<auto-generated>", "Autogenerated by Thrift",
               "GENERATED FILE, DO NOT EDIT", "Generated by Django 4.2", "generated by the IDL compiler",
               "DO NOT EDIT! This file is generated", "This file is automatically @generated", "generated",
               "GENERATED", "Code generated", "code generated ... do not edit", "Generated by hand"]
    rng = random.Random(8)
    for _ in range(3000):
        lines = ["x = 1"] * rng.randint(0, 14)
        if rng.random() < 0.7:
            lines.insert(rng.randint(0, len(lines)), rng.choice(markers))
        content = rng.choice(["\n", "\r\n"]).join(lines)
        head = "\n".join(content[:4000].split("\n", vendor.MARKER_LINES)[:vendor.MARKER_LINES])
        assert vendor.is_generated("a.py", content) == (vendor.GENERATED_MARKERS.search(head) is not None)


def test_ascii_alnum_is_the_table() -> None:
    from codefoundry.data.annotate import _ASCII_ALNUM, ascii_alnum

    data = np.random.default_rng(9).integers(0, 256, 100_000, dtype=np.uint8)
    data[:256] = np.arange(256, dtype=np.uint8)
    assert np.array_equal(ascii_alnum(data), _ASCII_ALNUM[data])
    assert ascii_alnum(np.zeros(0, np.uint8)).shape == (0,)


def test_a_failed_index_build_leaves_no_scratch(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, ["x" * 200, "y" * 300])
    with pytest.raises(OSError):
        build_indexes(ds, {"files": [tmp_path / "missing.arrow"]})
    assert sorted(p.name for p in (ds / "index").iterdir()) == []
