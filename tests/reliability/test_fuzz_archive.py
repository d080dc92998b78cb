"""Hostile archives: the extractor never raises, never writes to disk, never follows a link, stays in its budget.

Hypothesis builds zip and tar archives (plain, gzip, bzip2, xz) from members with traversal
names (`../`, absolute, NUL-free unicode), symlinks and hard links pointing out of the tree,
FIFOs, devices and directories, then cuts them short or overwrites bytes. Whatever comes in,
`ArchiveRepo.read()` yields rows: a corrupt archive is one `archive:corrupt` row, a bad member
a removed row with its reason, and only regular files within the limits carry content.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest
from fuzzing import fuzz, peak_rss_mb
from hypothesis import given
from hypothesis import strategies as st

from codefoundry.data.sources.archive import ArchiveRepo
from codefoundry.data.sources.unit import ReadOptions, SourceLimits

LIMITS = SourceLimits(max_file_bytes=4096, max_archive_bytes=32_768, max_archive_members=20)
OPTIONS = ReadOptions(limits=LIMITS)
FORMATS = {"zip": ".zip", "tar": ".tar", "gz": ".tar.gz", "bz2": ".tar.bz2", "xz": ".tar.xz"}
NAMES = st.sampled_from(["a.py", "pkg/b.py", "../../escape.py", "/etc/cron.d/x", "a/../../../up.py", "./c.py",
                         "pkg/", "LICENSE", "d/" + "n" * 200 + ".py", "é/ü.py", "x" * 300]) | \
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=30)
KINDS = st.sampled_from(["file", "file", "file", "symlink", "hardlink", "dir", "fifo", "chr"])
CONTENT = st.binary(max_size=600) | st.builds(lambda n, b: b * n, st.integers(0, 20_000),
                                              st.sampled_from([b"a", b"\0"]))
MEMBER = st.tuples(NAMES, KINDS, CONTENT, st.sampled_from(["/etc/passwd", "../../../../etc/shadow", "a.py", ".."]))


def _zip(members: list[tuple[str, str, bytes, str]], compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, kind, data, target in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if kind == "symlink":   # a zip symlink: the target as content, S_IFLNK in the external attributes
                info.external_attr = (0o120777 << 16)
                data = target.encode()
            zf.writestr(info, data)
    return buf.getvalue()


def _tar(members: list[tuple[str, str, bytes, str]], mode: str) -> bytes:
    buf = io.BytesIO()
    kinds = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE,
             "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, target in members:
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.linkname = target
                tf.addfile(info)
    return buf.getvalue()


def _archive(fmt: str, members: list[tuple[str, str, bytes, str]], compression: int) -> bytes:
    if fmt == "zip":
        return _zip(members, compression)
    return _tar(members, {"tar": "w", "gz": "w:gz", "bz2": "w:bz2", "xz": "w:xz"}[fmt])


def _mutate(data: bytes, cut: float | None, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data[: int(len(data) * cut)] if cut is not None else data)
    for where, value in flips:
        if out:
            out[int(where * (len(out) - 1))] = value
    return bytes(out)


def _read(path: Path) -> pa.Table:
    tables = list(ArchiveRepo(path, OPTIONS).read())
    return pa.concat_tables(tables) if tables else pa.table({})


def _also_a_file(members: list[tuple[str, str, bytes, str]], path: str) -> bool:
    return any(kind == "file" and name.lstrip("./").rstrip("/") == path for name, kind, _, _ in members)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@fuzz(25)
@given(fmt=st.sampled_from(list(FORMATS)), members=st.lists(MEMBER, max_size=8),
       compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]),
       cut=st.none() | st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4))
def test_fuzz_archive_yields_rows_and_touches_nothing(tmp_path_factory, fmt, members, compression, cut, flips):
    root = tmp_path_factory.mktemp("arch")
    path = root / f"repo{FORMATS[fmt]}"
    path.write_bytes(_mutate(_archive(fmt, members, compression), cut, flips))
    before = _tree(root.parent)
    table = _read(path)
    assert _tree(root.parent) == before                       # nothing extracted, nothing written anywhere
    assert not (Path("/etc/cron.d/x").exists() and Path("/etc/cron.d/x").stat().st_size == 0)
    rows = table.to_pylist()
    assert len(rows) <= LIMITS.max_archive_members + 1
    for row in rows:
        assert (row["content"] is None) == (row["reason"] is not None), row
        if row["content"] is not None:
            assert len(row["content"].encode()) <= LIMITS.max_file_bytes
    if rows and rows[0]["reason"] == "archive:corrupt":
        assert len(rows) == 1
    targets = {t for _, kind, _, t in members if kind in ("symlink", "hardlink")}
    linked = {name.lstrip("./").rstrip("/") for name, kind, _, _ in members if kind in ("symlink", "hardlink")}
    for row in rows:   # a link is never read, neither its target nor (zip) its stored target path
        if row["path"] in linked and row["reason"] is None and not _also_a_file(members, row["path"]):
            pytest.fail(f"link {row['path']} read as a file")
    assert not any(row["content"] == Path(t).read_text(errors="replace") for row in rows if row["content"]
                   for t in targets if t.startswith("/") and Path(t).is_file())


def _zip_bomb(path: Path, members: int, member_bytes: int) -> None:
    """Members of zeros that each inflate to `member_bytes` (deflate: about 1000:1), written in chunks."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            with zf.open(f"bomb/{i}.py", "w", force_zip64=True) as f:
                for _ in range(member_bytes // len(chunk)):
                    f.write(chunk)


def _lying_zip(path: Path, real_bytes: int) -> None:
    """One member whose headers claim 10 bytes but which inflates to `real_bytes`."""
    _zip_bomb(path, 1, real_bytes)
    data = bytearray(path.read_bytes())
    for sig, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        data[at + size_at: at + size_at + 4] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["many_members", "lying_size"])
def test_zip_bombs_stay_within_memory(tmp_path: Path, kind: str) -> None:
    """64 MB of inflated zeros (or one member lying about its size) costs no more memory than the budget."""
    path = tmp_path / "bomb.zip"
    if kind == "many_members":
        _zip_bomb(path, 4, 16 << 20)
    else:
        _lying_zip(path, 64 << 20)
    assert path.stat().st_size < 1 << 20
    base = peak_rss_mb()
    rows = _read(path).to_pylist()
    assert peak_rss_mb() - base < 32, "the bomb was inflated in memory"
    assert rows and all(r["content"] is None for r in rows)
    assert {r["reason"] for r in rows} <= {"read:too_big", "archive:too_big", "archive:corrupt_member",
                                           "archive:corrupt"}


def test_tar_gz_bomb_stays_within_memory(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w|") as tf:
        info = tarfile.TarInfo("huge.py")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    base = peak_rss_mb()
    rows = _read(path).to_pylist()
    assert peak_rss_mb() - base < 32
    assert [r["reason"] for r in rows] == ["read:too_big"]


# ---- regressions found by the properties above ----

def test_encrypted_zip_member_is_a_removed_row(tmp_path: Path) -> None:
    """zipfile raises RuntimeError (not BadZipFile) for a member that needs a password."""
    data = bytearray(_zip([("a/x.py", "file", b"print(1)\n", ""), ("a/y.py", "file", b"y = 2\n", "")],
                          zipfile.ZIP_STORED))
    at = data.find(b"PK\x03\x04")
    data[at + 6] |= 1                      # general-purpose flag bit 0: encrypted, in the local header
    at = data.find(b"PK\x01\x02")
    data[at + 8] |= 1                      # and in the central directory
    (tmp_path / "enc.zip").write_bytes(bytes(data))
    rows = {r["path"]: r["reason"] for r in _read(tmp_path / "enc.zip").to_pylist()}
    assert rows == {"x.py": "archive:encrypted", "y.py": None}


def test_corrupt_lzma_member_is_a_removed_row(tmp_path: Path) -> None:
    """A zip member compressed with LZMA whose stream is garbage raises lzma.LZMAError."""
    data = bytearray(_zip([("x.py", "file", b"print(1)\n" * 50, "")], zipfile.ZIP_LZMA))
    at = data.find(b"PK\x03\x04") + 30 + len("x.py")
    data[at + 4: at + 20] = b"\xff" * 16
    (tmp_path / "lzma.zip").write_bytes(bytes(data))
    assert [r["reason"] for r in _read(tmp_path / "lzma.zip").to_pylist()] == ["archive:corrupt_member"]


def test_links_in_a_tar_are_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("decoy secret\n")
    members = [("repo/a.py", "file", b"a = 1\n", ""), ("repo/link.py", "symlink", b"", str(secret)),
               ("repo/hard.py", "hardlink", b"", str(secret)), ("repo/up.py", "symlink", b"", "../../../" * 8)]
    (tmp_path / "r.tar").write_bytes(_tar(members, "w"))
    rows = {r["path"]: r["reason"] for r in _read(tmp_path / "r.tar").to_pylist()}
    assert rows == {"a.py": None, "link.py": "read:symlink", "hard.py": "read:symlink", "up.py": "read:symlink"}
    assert sorted(os.listdir(tmp_path)) == ["r.tar", "secret.txt"]


def test_zip_symlink_member_is_not_read_as_a_file(tmp_path: Path) -> None:
    """A zip stores a symlink as a member whose bytes are the target path: it was kept as a file of that text."""
    members = [("a.py", "file", b"a = 1\n", ""), ("link.py", "symlink", b"", "/etc/passwd")]
    (tmp_path / "r.zip").write_bytes(_zip(members, zipfile.ZIP_DEFLATED))
    rows = {r["path"]: r["reason"] for r in _read(tmp_path / "r.zip").to_pylist()}
    assert rows == {"a.py": None, "link.py": "read:symlink"}
