"""A git repository: the files at HEAD, read through git (untracked files never enter).

Two git processes per repository, whatever its size: `git ls-tree -r -l -z HEAD` lists the
blobs with their ids and sizes, and one `git cat-file --batch` streams every blob we read.
The repository is named `owner/name` from its `origin` remote URL, else after its folder.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa

from codefoundry.data.sources.repo import Entry, RepoInfo, Skip, printable, repo_batches
from codefoundry.data.sources.unit import ReadOptions

_REMOTE = re.compile(r"[:/]([^/:]+)/([^/]+?)(?:\.git)?/?$")


def is_git_repo(path: Path) -> bool:
    return (path / ".git").exists()


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)


def repo_name(repo: Path) -> str:
    """"owner/name" from `origin`'s URL (https or scp-like), else the folder name."""
    url = _git(repo, "config", "--get", "remote.origin.url").stdout.decode("utf-8", "replace").strip()
    m = _REMOTE.search(url)
    return f"{m.group(1)}/{m.group(2)}" if m else repo.resolve().name


class BlobReader:
    """One `git cat-file --batch` process answering blob requests in order."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, sha: str) -> bytes:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(sha.encode() + b"\n")
        stdin.flush()
        header = stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise Skip("read:unreadable")
        data = _read_exact(stdout, int(header[2]))
        stdout.read(1)  # the newline after each object
        return data

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise Skip("read:unreadable")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _raise(reason: str) -> bytes:
    raise Skip(reason)


@dataclass(frozen=True)
class GitRepo:
    """The files of a git repository at HEAD."""

    root: Path
    options: ReadOptions

    def describe(self) -> str:
        return printable(f"git {self.root}")

    def read(self) -> Iterator[pa.Table]:
        listing = _git(self.root, "ls-tree", "-r", "-l", "-z", "--full-tree", "HEAD")
        info = RepoInfo(repo_name(self.root))
        if listing.returncode != 0:  # no commits yet: an empty repository
            yield from repo_batches(info, [], **self.options.kwargs())
            return
        reader = BlobReader(self.root)
        try:
            entries = []
            for item in listing.stdout.split(b"\0"):
                if not item:
                    continue
                meta, path_b = item.split(b"\t", 1)
                mode, kind, sha, size = meta.split()
                path = path_b.decode("utf-8", "surrogateescape")
                if kind != b"blob":
                    continue  # submodules
                if mode == b"120000":
                    entries.append(Entry(path, None, lambda limit: _raise("read:symlink")))
                    continue
                entries.append(Entry(path, int(size), lambda limit, s=sha.decode(): reader.read(s), sha.decode()))
            yield from repo_batches(info, entries, **self.options.kwargs())
        finally:
            reader.close()
