"""`.tar.gz` / `.tgz` / `.tar` / `.zip` archives of a repository, read in memory with bounds.

Nothing is extracted to disk. Each member is read up to `max_file_bytes + 1` bytes whatever
its header claims, the archive as a whole up to `max_archive_bytes` and `max_archive_members`
(a zip or gzip bomb stops there: the rest is recorded as `archive:too_big`), and a corrupt
archive becomes one removed row `archive:corrupt` instead of an error (a bad member:
`archive:corrupt_member`, an encrypted one `archive:encrypted`; links are never read). A single top-level
folder (GitHub's `name-main/`) is stripped from paths.
"""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from codefoundry.data.pipeline import REMOVED_SCHEMA, from_records
from codefoundry.data.sources.repo import Entry, RepoInfo, Skip, printable, repo_batches
from codefoundry.data.sources.unit import ReadOptions

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")
ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
          NotImplementedError)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _strip_top(names: list[str]) -> int:
    """Characters to strip when every member lives under one top-level folder."""
    tops = {n.split("/", 1)[0] for n in names}
    return len(tops.pop()) + 1 if len(tops) == 1 and all("/" in n for n in names) else 0


class _Budget:
    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, data: bytes) -> bytes:
        if len(data) > self.left:
            self.left = 0
            raise Skip("archive:too_big")
        self.left -= len(data)
        return data


def _members(path: Path, opts: ReadOptions) -> list[Entry]:
    limits = opts.limits
    budget = _Budget(limits.max_archive_bytes)
    entries: list[Entry] = []
    cache: dict[str, bytes | str] = {}  # read eagerly: the archive is streamed once, in order
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()][: limits.max_archive_members]
            strip = _strip_top([i.filename for i in infos])
            for info in infos:
                rel = info.filename[strip:]
                try:
                    if info.file_size > limits.max_file_bytes:
                        raise Skip("read:too_big")
                    if info.flag_bits & 0x1:  # zipfile raises RuntimeError for want of a password
                        raise Skip("archive:encrypted")
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink: its bytes are the target
                        raise Skip("read:symlink")
                    with zf.open(info) as f:
                        cache[rel] = budget.take(f.read(limits.max_file_bytes + 1))
                except Skip as s:
                    cache[rel] = s.reason
                except ERRORS:
                    cache[rel] = "archive:corrupt_member"
                entries.append(Entry(rel, None, lambda limit, r=rel: _cached(cache, r)))
        return entries
    with tarfile.open(path, "r:*") as tf:
        members = []
        for m in tf:
            if len(members) >= limits.max_archive_members:
                break
            if not m.isdir():
                members.append(m)
            if m.isfile():
                rel = m.name
                try:
                    if m.size > limits.max_file_bytes:
                        raise Skip("read:too_big")
                    f = tf.extractfile(m)
                    cache[rel] = budget.take(f.read(limits.max_file_bytes + 1)) if f else "read:unreadable"
                except Skip as s:
                    cache[rel] = s.reason
            else:
                cache[m.name] = "read:symlink" if (m.issym() or m.islnk()) else \
                    "read:device" if (m.ischr() or m.isblk()) else "read:fifo" if m.isfifo() else "read:not_regular"
        strip = _strip_top([m.name for m in members])
        for m in members:
            entries.append(Entry(m.name[strip:], None, lambda limit, r=m.name: _cached(cache, r)))
    return entries


def _cached(cache: dict[str, bytes | str], key: str) -> bytes:
    value = cache[key]
    if isinstance(value, str):
        raise Skip(value)
    return value


@dataclass(frozen=True)
class ArchiveRepo:
    """A repository packed in an archive file; named after the archive (`tools-main.zip` → tools-main)."""

    path: Path
    options: ReadOptions

    def describe(self) -> str:
        return printable(f"archive {self.path}")

    def read(self) -> Iterator[pa.Table]:
        info = RepoInfo(archive_stem(self.path))
        try:
            entries = _members(self.path, self.options)
        except ERRORS:
            yield from_records([{"repo_name": info.repo_name, "path": self.path.name, "reason": "archive:corrupt",
                                 "licenses": [], "license_type": "no_license"}], REMOVED_SCHEMA)
            return
        yield from repo_batches(info, entries, **self.options.kwargs())
