"""A plain directory as one repository; and the file-type checks every on-disk source shares."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from codefoundry.data.sources.repo import (
    BINARY_SNIFF,
    Entry,
    RepoInfo,
    Skip,
    listed_batches,
    paths_looked_at,
    printable,
)
from codefoundry.data.sources.unit import ReadOptions

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".tox", ".ruff_cache"})


def file_kind_reason(mode: int) -> str | None:
    """None for a regular file, else the reason slug for a FIFO, socket, device or other."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "read:fifo"
    if stat.S_ISSOCK(mode):
        return "read:socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "read:device"
    return "read:not_regular"


def read_file(path: str | Path, limit: int) -> bytes:
    """At most `limit + 1` bytes of a regular file (never opens FIFOs or devices), or Skip."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise Skip("read:symlink_loop" if e.errno == errno.ELOOP else
                   "read:broken_symlink" if e.errno == errno.ENOENT else "read:unreadable") from None
    reason = file_kind_reason(st.st_mode)
    if reason:
        raise Skip(reason)
    try:
        with open(path, "rb") as f:
            head = f.read(BINARY_SNIFF)
            if b"\0" in head:  # a binary file: no need to read the rest
                raise Skip("read:binary")
            return head + f.read(limit + 1 - len(head)) if len(head) <= limit else head[: limit + 1]
    except OSError:
        raise Skip("read:unreadable") from None


def walk(root: Path, skip_top: frozenset[str] = frozenset()) -> Iterator[tuple[str, str]]:
    """(path relative to root with "/", absolute path) of every non-directory entry, symlinked dirs not followed;
    the real folders named in `skip_top` directly under root are not walked (a symlink of that name is listed)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        folder = Path(os.path.relpath(dirpath, root)).as_posix()  # once per folder: pathlib is slow per file
        top = folder == "."
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not (
            top and d in skip_top and not os.path.islink(os.path.join(dirpath, d))))
        prefix = "" if top else folder + "/"
        for name in sorted(filenames):
            yield prefix + name, os.path.join(dirpath, name)
        for name in dirnames:  # a symlink to a directory is listed as a dir but not walked: record it
            if os.path.islink(os.path.join(dirpath, name)):
                yield prefix + name, os.path.join(dirpath, name)


def _raise(reason: str) -> bytes:
    raise Skip(reason)


def _real_dir(path: str, dirs: dict[str, Path | None]) -> Path | None:
    """A directory's resolved path (None if it cannot be resolved), remembered in `dirs`.

    A folder that is no symlink resolves to its resolved parent plus its name: one lstat, where a resolve
    looks at every folder of the path again (a distribution's files sit in hundreds of folders)."""
    unknown = []  # `path` and its folders up to the first one remembered (or the top), deepest first
    while path not in dirs:
        unknown.append(path)
        head, name = os.path.split(path)
        if not head or name in ("", ".", ".."):
            break
        path = head
    for folder in reversed(unknown):
        head, name = os.path.split(folder)
        parent = dirs.get(head) if head and name not in ("", ".", "..") else None
        if parent is not None and not _is_link(folder):
            dirs[folder] = parent / name
            continue
        try:
            dirs[folder] = Path(folder).resolve(strict=True)
        except (OSError, RuntimeError):
            dirs[folder] = None
    return dirs[unknown[0] if unknown else path]


def _is_link(path: str) -> bool:
    """A symlink, or a path lstat cannot tell about (resolve decides then)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return True


def disk_entry(rel: str, full: str | Path, root: Path, dirs: dict[str, Path | None] | None = None) -> Entry:
    """One file under `root`; a symlink is read only when it resolves inside `root` (never /etc/passwd).

    `dirs` remembers resolved folders across the calls of one listing (a repository's files share few).
    """
    dirs = {} if dirs is None else dirs
    target: str | Path
    try:
        st: os.stat_result | None = os.lstat(full)
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        full = Path(full)
        if full.is_dir():  # never followed; a link to an ancestor is a loop
            target = full.resolve()
            loop = full.parent.resolve().is_relative_to(target)
            return Entry(rel, None, lambda limit, r="read:symlink_loop" if loop else "read:symlink_dir": _raise(r))
        try:
            target = full.resolve(strict=True)
        except (OSError, RuntimeError):  # broken or looping links: read_file names the reason
            target = full
        else:
            if not _inside(target, root, dirs):
                return Entry(rel, None, lambda limit: _raise("read:symlink"))
            try:
                st = os.stat(target)
            except OSError:
                st = None
    elif st is not None:
        # Not a link itself, so it resolves to its resolved folder + name (a linked folder may lead out of root).
        parent = os.path.dirname(full)
        folder = _real_dir(parent, dirs)
        if folder is None:
            target = full
        else:
            if not _folder_inside(parent, folder, root, dirs):
                return Entry(rel, None, lambda limit: _raise("read:symlink"))
            target = os.path.join(folder, os.path.basename(full))
    else:
        target = full
    size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None
    return Entry(rel, size, lambda limit, p=target: read_file(p, limit))


def disk_entries(listing: list[str], root: Path, options: ReadOptions) -> list[Entry]:
    """Entries of the distinct paths (relative to `root`) of `listing` that `repo_batches` will look at."""
    wanted = paths_looked_at(listing, options.limits, options.only_suffixes, options.skip_suffixes)
    dirs: dict[str, Path | None] = {}
    base = os.fspath(root)
    return [disk_entry(rel, os.path.join(base, rel), root, dirs) for rel in listing if rel in wanted]


def _folder_inside(parent: str, folder: Path, root: Path, dirs: dict[str, Path | None]) -> bool:
    """Whether the resolved `folder` of `parent` is under the resolved root (remembered per folder)."""
    key = "\0inside:" + parent  # no real path starts with NUL
    if key not in dirs:
        dirs[key] = folder if _inside(folder, root, dirs) else None
    return dirs[key] is not None


def _inside(target: Path, root: Path, dirs: dict[str, Path | None]) -> bool:
    real_root = _real_dir(os.fspath(root), dirs)
    return target.is_relative_to(real_root if real_root is not None else root.resolve())


@dataclass(frozen=True)
class DirectoryRepo:
    """Every file under a directory (not a git repository), named after the folder."""

    root: Path
    options: ReadOptions
    repo_name: str = ""

    def describe(self) -> str:
        return printable(f"dir {self.repo_name or self.root.name} @ {self.root}")

    def read(self) -> Iterator[pa.Table]:
        # Only the sorted relative paths are held (`walk`'s absolute path is the root joined with it): an
        # entry is made when its file is read.
        root, paths = os.fspath(self.root), sorted(rel for rel, _ in walk(self.root))
        dirs: dict[str, Path | None] = {}
        yield from listed_batches(RepoInfo(self.repo_name or self.root.name), paths,
                                  lambda i: disk_entry(paths[i], os.path.join(root, paths[i]), self.root, dirs),
                                  **self.options.kwargs())
