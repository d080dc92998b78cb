"""Reading sources in bulk gives exactly what the file-by-file ways give: listings, license evidence, rows."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa

from codefoundry.data.license import LicenseEvidence, from_license_text, spdx_headers
from codefoundry.data.license.match import _gram_index, _Windows, examine, references
from codefoundry.data.license.names import evidence_files, is_license_file, is_metadata_file
from codefoundry.data.sources.local import SKIP_DIRS, DirectoryRepo, walk
from codefoundry.data.sources.python_env import (
    StdlibRepo,
    _metadata_name,
    distributions,
    listed_files,
    record_paths,
)
from codefoundry.data.sources.repo import Skip, decode
from codefoundry.data.sources.unit import ReadOptions, SourceLimits
from conftest import MIT_LICENSE

PATHS = ["LICENSE", "src/a.py", "docs/COPYING.txt", "LICENSES/MIT.txt", "pkg/licenses/x", "gpl-3.0.txt", "mit.md",
         "Apache-2.0", "a/NOTICE", "b/setup.py", "c/pyproject.toml", "Cargo.toml", "x.dist-info/METADATA", "PKG-INFO",
         "submit.py", "limits/commit.txt", "LİCENSE", "LICENſE", "Kelvin-\u212a", "bsd.txt", "isc", "psf-2.0.rst",
         "UNLICENSE.md", "tests/license_test.py", "a/b/c/d/licence", "ＬＩＣＥＮＳＥ", "ü/COPYRIGHT", "mpl-2.0", "zlib",
         "cc0", "wtfpl.txt", "0BSD", "notes/gpl_faq.md", "bad\udcffname/LICENSE", "setup.cfg", "package.json"]


def test_evidence_files_are_the_per_path_tests() -> None:
    rng = random.Random(5)
    alphabet = "abcLICENSEmitgplbsd/._-Üſ\u212aİ0123"
    paths = PATHS + ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 20))) for _ in range(3000)]
    clean = [p for p in paths if "\udcff" not in p]
    for sample in (paths, clean, clean[:10], []):  # surrogates and short lists go the per-path way
        assert evidence_files(sample) == [is_license_file(p) or is_metadata_file(p) for p in sample]
    assert sum(evidence_files(clean)) > 20


def _plain_listing(files: list[str]) -> list[str]:
    out, seen = [], set()
    for rel in files:
        parts = rel.split("/")
        if parts[0].endswith(".dist-info") or rel.startswith("..") or SKIP_DIRS.intersection(parts) or rel in seen:
            continue
        seen.add(rel)
        out.append(rel)
    return out


def test_listed_files_are_the_part_by_part_filter() -> None:
    files = ["a/b.py", "a.dist-info/RECORD", "x/a.dist-info/y", "../bin/tool", "..x/y", "a/__pycache__/b.pyc",
             "__pycache__", "a/.git/config", "a/.gitx/config", "a/b.py", "ü/ñ.py", ".tox", "a/.hg", "dist-info/x",
             "b.dist-infox/c", "a//b.py", "a/b.py/"] * 2
    for sample in (files, files[:3], [], ["bad\udcff/x.py", "a/__pycache__/b"]):
        assert listed_files(sample) == _plain_listing(sample)


def test_record_paths_without_quotes_are_importlib_files(tmp_path: Path) -> None:
    cases = {"plain": "p/a.py,sha256=x,3\np/./b.py,,\np//c.py\np/d/,,\n/abs/e.py,,\n",
             "empty-line": "p/a.py,,\n\np/b.py,,\n", "four-fields": "p/a.py,x,3,extra\n",
             "crlf": "p/a.py,,\r\np/b,,\r\n"}
    for name, record in cases.items():
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Name: {name}\n")
        (info / "RECORD").write_bytes(record.encode())
        dist = metadata.Distribution.at(info)
        want = _outcome(lambda d=dist: [f.as_posix() for f in d.files or []])
        assert _outcome(lambda d=dist: record_paths(d)) == want, name


def _outcome(call: Callable[[], list[str]]) -> list[str] | str:
    """What a call returns, or the type of what it raises (importlib raises on some malformed RECORDs: so do we)."""
    try:
        return call()
    except Exception as e:  # compared, not hidden
        return type(e).__name__


def test_stdlib_walk_skips_only_a_real_site_packages(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    for rel in ("os.py", "json/__init__.py", "site-packages/pip/x.py", "sub/site-packages/keep.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    os.symlink(root / "json", root / "sub" / "linked")
    want = [rel for rel, _ in walk(root) if not rel.startswith("site-packages/")]
    assert [rel for rel, _ in walk(root, frozenset({"site-packages"}))] == want
    assert "sub/site-packages/keep.py" in want and "sub/linked" in want
    rows = pa.concat_tables(StdlibRepo(root, ReadOptions()).read())
    assert sorted(rows.column("path").to_pylist()) == sorted(want)


def test_windows_counted_with_numpy_are_the_word_by_word_ones() -> None:
    rng = random.Random(11)
    index = _gram_index()
    for ref in [r for r in references() if r.grams][::7]:
        vocab = [*sorted(ref.grams), "zz qq", "yy ww"]
        for _ in range(4):
            doc: list[str | None] = [rng.choice(vocab) for _ in range(rng.randrange(1, 3 * len(ref.grams) + 20))]
            ids = index.doc_ids(doc)
            fast, plain = _Windows(doc, ref, ids), _Windows(doc, ref)
            for _ in range(3):  # matches take stretches out of the document: only their windows are counted again
                assert np.array_equal(fast.pos, plain.pos)
                assert np.array_equal(fast.count, plain.count) and fast.scanned == plain.scanned
                assert fast.best(doc) == plain.best(doc)
                first = rng.randrange(len(doc))
                last = min(len(doc) - 1, first + rng.randrange(1, 60))
                doc[first:last + 1] = [None] * (last + 1 - first)
                ids[first:last + 1] = -1
                fast.explain(doc, first, last)
                plain.explain(doc, first, last)


def test_a_license_under_other_copyright_lines_is_the_same_match() -> None:
    other = MIT_LICENSE.replace("Copyright (c)", "Copyright (c) 1999 Someone Else,\nCopyright (c)")
    assert examine(other) == examine(MIT_LICENSE)
    assert from_license_text(other) == from_license_text(MIT_LICENSE) == ["MIT"]
    bundled = f"{MIT_LICENSE}\n-----\n{references()[0].name}\n-----\n{MIT_LICENSE}"
    assert examine(bundled)[0].ids == ("MIT",)


def test_licenses_per_folder_follow_new_evidence() -> None:
    evidence = LicenseEvidence()
    evidence.add_file("LICENSE", MIT_LICENSE)
    assert evidence.licenses_for("a/x.py") == ["MIT"]
    assert evidence.licenses_for("a/y.py", ["GPL-3.0-only"]) == ["GPL-3.0", "MIT"]
    assert evidence.licenses_for("a/z.py") == ["MIT"]
    evidence.declare("a", ["Apache-2.0"])  # the folder's cached answer is dropped
    assert evidence.licenses_for("a/x.py") == ["Apache-2.0", "MIT"]
    evidence.licenses_for("a/x.py").append("changed")  # callers get their own list
    assert evidence.licenses_for("a/x.py") == ["Apache-2.0", "MIT"]


def test_rows_from_checked_bytes_are_the_decoded_texts(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    long_head = "x = 1\n" * 600 + "# SPDX-License-Identifier: GPL-3.0-only\n"  # past the header's characters
    files = {"ascii.py": b"print('hi')\n", "utf8.py": "é = '東京'\n".encode(), "latin1.py": b"caf\xe9 = 1\n",
             "binary.bin": b"ab\0cd", "empty.py": b"", "spdx.py": b"# SPDX-License-Identifier: Apache-2.0\nx = 1\n",
             "spdx-late.py": long_head.encode(), "spdx-utf8.c": "/* SPDX-License-Identifier: MIT */ é\n".encode(),
             "bom.py": b"\xef\xbb\xbfx = 1\n", "LICENSE": MIT_LICENSE.encode()}
    for name, data in files.items():
        (root / name).write_bytes(data)
    table = pa.concat_tables(DirectoryRepo(root, ReadOptions(SourceLimits())).read())
    rows = {r["path"]: r for r in table.to_pylist()}
    for name, data in files.items():
        try:
            text, reason = decode(data), None
        except Skip as skip:
            text, reason = None, skip.reason
        assert rows[name]["content"] == text and rows[name]["reason"] == reason, name
        own = spdx_headers(text) if text else []
        assert rows[name]["licenses"] == sorted({"MIT", *own}), name
    assert rows["spdx.py"]["licenses"] == ["Apache-2.0", "MIT"] and rows["spdx-late.py"]["licenses"] == ["MIT"]
    assert rows["latin1.py"]["reason"] == "read:invalid_utf8" and rows["binary.bin"]["reason"] == "read:binary"


def test_distribution_names_from_headers_are_importlibs(tmp_path: Path) -> None:
    cases = {"plain": ("Metadata-Version: 2.1\nName: Plain_Pkg\nVersion: 1\n\nName: not this, the body\n", None),
             "none": ("Metadata-Version: 2.1\nVersion: 1\n\nbody\n", None), "empty": ("", "Name: from-pkg-info\n"),
             "folded": ("Name: folded\n  continued\nSummary: s\n", None),
             "crlf": ("Name: crlf\r\nVersion: 1\r\n", None)}
    dists = [metadata.Distribution.at(d) for d in distributions()[::10]]
    for name, (core, pkg_info) in cases.items():
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_bytes(core.encode())
        if pkg_info is not None:
            (info / "PKG-INFO").write_text(pkg_info)
        dists.append(metadata.Distribution.at(info))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # importlib warns on a missing key
        for dist in dists:
            assert _metadata_name(dist, dist.read_text("METADATA")) == dist.metadata["Name"]
