"""Turning one repository's files into records: read safely, decode, gather license evidence.

Every source that yields repositories (directories, git, archives, installed distributions)
lists its files as `Entry`s and hands them to `repo_batches`, which owns the bad-input rules:

    not a regular file     read:fifo | read:socket | read:device | read:symlink_loop | read:not_regular
    over max_file_bytes    read:too_big     (never read)
    cannot be read         read:unreadable
    NUL byte in 8000 bytes read:binary      (git's heuristic)
    not UTF-8              read:invalid_utf8
    a name not in UTF-8    read:path_not_utf8 (the path is kept with its bad bytes as \\xNN escapes)

Removed rows keep path, size and repository columns, with a null `content`. License and
metadata files are read first, whatever their encoding, and each file gets the licenses that
apply to it (`codefoundry.data.license.evidence`): its directories' and its own SPDX header's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from codefoundry.data.annotate import git_blob_sha1
from codefoundry.data.license import LicenseEvidence, decode_lenient, license_type, spdx_headers
from codefoundry.data.license.names import evidence_files
from codefoundry.data.pipeline import REMOVED_SCHEMA
from codefoundry.data.sources.unit import SourceLimits

BINARY_SNIFF = 8000  # git's buffer_is_binary() looks at the first 8000 bytes


class Skip(Exception):
    """Raised by an entry's reader: the file cannot be used; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    """One file of a repository: its path in the repo, its size if known, and how to get its bytes.

    `read(limit)` returns at most `limit + 1` bytes (so a lying size is still caught) or raises Skip.
    """

    path: str
    size: int | None
    read: Callable[[int], bytes]
    hexsha: str | None = None


@dataclass(frozen=True)
class RepoInfo:
    repo_name: str
    stars: int | None = None
    forks: int | None = None


def decode(data: bytes) -> str:
    """UTF-8 text of a file's bytes, or Skip("read:binary" | "read:invalid_utf8")."""
    if b"\0" in data[:BINARY_SNIFF]:
        raise Skip("read:binary")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Skip("read:invalid_utf8") from None


def printable(name: str) -> str:
    """A path or name as valid UTF-8: undecodable bytes (surrogate escapes) become \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    """Whether `name` encodes as UTF-8 (no lone surrogates: undecodable bytes kept as surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _selected(path: str, only: tuple[str, ...], skip: tuple[str, ...]) -> bool:
    name = path.lower()
    return (not only or name.endswith(only)) and not (skip and name.endswith(skip))


def paths_looked_at(paths: Iterable[str], limits: SourceLimits, only_suffixes: tuple[str, ...] = (),
                    skip_suffixes: tuple[str, ...] = ()) -> set[str]:
    """Which of a repository's (distinct) `paths` `repo_batches` looks at with these settings: the first
    `max_files_per_repo` selected ones by path order, and every license or metadata file.

    A source that lists far more files than it reads (a distribution's RECORD, the standard library)
    makes entries, a stat and a resolve each, for these alone; `repo_batches` gives the same rows.
    """
    paths = list(paths)
    chosen: Iterable[str] = sorted(paths)
    if only_suffixes or skip_suffixes:  # else every path is selected: no test per path
        chosen = (p for p in chosen if _selected(p, only_suffixes, skip_suffixes))  # tested up to the limit only
    if limits.max_files_per_repo:
        chosen = itertools.islice(chosen, limits.max_files_per_repo)
    return set(chosen).union(itertools.compress(paths, evidence_files(paths)))


def repo_batches(info: RepoInfo, entries: Sequence[Entry], limits: SourceLimits, permissive: Sequence[str],
                 license_threshold: float, evidence: LicenseEvidence | None = None,
                 batch_rows: int = 2048, only_suffixes: tuple[str, ...] = (),
                 skip_suffixes: tuple[str, ...] = ()) -> Iterator[pa.Table]:
    """Rows (REMOVED_SCHEMA, `reason` null for usable files) for a repository, in path order.

    License evidence comes from every license/metadata file of the repository (even beyond
    `max_files_per_repo`, and whatever their encoding) and from the `SPDX-License-Identifier`
    lines of the files read; pass `evidence` to start from what the source already knows
    (a distribution's METADATA). `only_suffixes` / `skip_suffixes` select the files listed (a
    subset such as notebooks reads its own); license evidence still comes from every file.
    """
    entries = sorted(entries, key=lambda e: e.path)
    yield from listed_batches(info, [e.path for e in entries], entries.__getitem__, limits, permissive,
                              license_threshold, evidence, batch_rows, only_suffixes, skip_suffixes)


def listed_batches(info: RepoInfo, paths: Sequence[str], entry_at: Callable[[int], Entry], limits: SourceLimits,
                   permissive: Sequence[str], license_threshold: float, evidence: LicenseEvidence | None = None,
                   batch_rows: int = 2048, only_suffixes: tuple[str, ...] = (),
                   skip_suffixes: tuple[str, ...] = ()) -> Iterator[pa.Table]:
    """`repo_batches` over a sorted listing of distinct `paths`, whose `Entry`s `entry_at(i)` makes only when
    `paths[i]` is read: a repository of 100,000 files costs its path strings, not an entry and a reader each
    held until its last batch (about 400 bytes a file more)."""
    evidence = evidence or LicenseEvidence()
    first_read: dict[str, bytes] = {}  # license/metadata bytes, so that chosen ones are not read twice
    for i in itertools.compress(range(len(paths)), evidence_files(paths)):
        path = paths[i]
        if is_utf8(path):
            e = entry_at(i)
            try:
                if e.size is not None and e.size > limits.max_file_bytes:
                    continue
                first_read[path] = e.read(limits.max_file_bytes)
            except Skip:
                continue
            evidence.add_file(path, decode_lenient(first_read[path][: limits.max_file_bytes]), license_threshold)
    # Evidence is complete here, so each batch of `batch_rows` files is built and handed on alone:
    # a worker holds one batch's contents, not a whole repository's.
    chosen: Iterator[int] = (i for i, path in enumerate(paths) if _selected(path, only_suffixes, skip_suffixes))
    if limits.max_files_per_repo:
        chosen = itertools.islice(chosen, limits.max_files_per_repo)
    while batch := list(itertools.islice(chosen, batch_rows)):
        yield _batch(info, [entry_at(i) for i in batch], first_read, limits, evidence, permissive)


def _text_bytes(data: bytes) -> bytes:
    """`decode`'s checks (Skip "read:binary" | "read:invalid_utf8") without keeping the string: the column is
    built from the bytes (an ASCII file, most of them, is not even decoded)."""
    if b"\0" in data[:BINARY_SNIFF]:
        raise Skip("read:binary")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise Skip("read:invalid_utf8") from None
    return data


def binary_array(values: Sequence[bytes | None]) -> pa.Array:
    """`pa.array(values, pa.binary())` from one joined buffer: Arrow's builder copied each value into a buffer it
    grew as it went, at twice the cost (more where its pool's pages were new)."""
    n = len(values)
    lengths = np.fromiter((0 if v is None else len(v) for v in values), np.int64, n)
    if n and lengths.sum() >= 2**31:  # past 32-bit offsets: the builder's own error
        return pa.array(values, pa.binary())
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [v is not None for v in values]
    validity = None if all(present) else pa.py_buffer(np.packbits(np.array(present, bool), bitorder="little"))
    data = b"".join(v for v in values if v is not None)
    return pa.Array.from_buffers(pa.binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def _batch(info: RepoInfo, entries: Sequence[Entry], first_read: dict[str, bytes], limits: SourceLimits,
           evidence: LicenseEvidence, permissive: Sequence[str]) -> pa.Table:
    """REMOVED_SCHEMA rows of `entries`, read now (or taken from `first_read`)."""
    rows: dict[str, list] = {name: [] for name in REMOVED_SCHEMA.names}
    contents: list[bytes | None] = []
    licenses: list[list[str]] = []
    for e in entries:
        content, reason, size, sha, path = None, None, e.size, e.hexsha, e.path
        try:
            if not is_utf8(path):
                path = printable(path)
                raise Skip("read:path_not_utf8")
            if e.size is not None and e.size > limits.max_file_bytes:
                raise Skip("read:too_big")
            data = first_read.pop(e.path) if e.path in first_read else e.read(limits.max_file_bytes)
            if len(data) > limits.max_file_bytes:
                raise Skip("read:too_big")
            size, sha = len(data), sha or git_blob_sha1(data)
            content = _text_bytes(data)
        except Skip as skip:
            reason = skip.reason
        # a file's own SPDX header (looked for in the text only where the bytes name one)
        own = spdx_headers(content.decode("utf-8")) if content and b"SPDX-License-Identifier" in content else []
        licenses.append(evidence.licenses_for(path, own))
        contents.append(content)
        for name, value in (("path", path), ("size", size), ("hexsha", sha), ("reason", reason)):
            rows[name].append(value)
    n = len(entries)
    types: dict[tuple[str, ...], str] = {}  # a batch's files share few license lists
    for key in map(tuple, licenses):
        if key not in types:
            types[key] = license_type(key, permissive)
        rows["license_type"].append(types[key])
    rows |= {"repo_name": [printable(info.repo_name)] * n, "stars": [info.stars] * n, "forks": [info.forks] * n,
             "licenses": licenses,
             "content": binary_array(contents).view(pa.string())}  # checked UTF-8 above
    for name in ("ext", "lang", "avg_line_length", "max_line_length", "alphanum_fraction"):
        rows[name] = [None] * n
    return pa.Table.from_pydict(rows, schema=REMOVED_SCHEMA)
