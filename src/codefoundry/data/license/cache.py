"""License-file verdicts kept across runs, in `$CODEFOUNDRY_CACHE/license/` (default `~/.cache/codefoundry`).

Matching a license text against the references costs milliseconds per distinct text, and the same
texts come back in every curation of overlapping sources (a venv's distributions, a re-run with
other settings, the next crawl of the same repositories). A verdict is stored per text (its hash,
the question asked and the threshold) in a folder named after a hash of everything that decides
it: this package's code and reference texts. A change to either starts an empty folder.

Layout: the folder holds packs, JSON objects of entry name → ids, each written whole (a temporary
file renamed) by one process: its new verdicts, every `FLUSH_EVERY` and when it exits. A process
reads every pack once, when it first looks a verdict up; when it finds more than `MAX_PACKS`, it
writes what it read as one pack and removes the ones it merged. Concurrent curations only ever
add packs or remove ones whose entries another pack holds; a pack that vanishes or cannot be
read costs its verdicts being judged again, and a cache that cannot be written only the work again.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from functools import cache
from pathlib import Path

import xxhash

FORMAT = 3
"""Version of the entries' layout (3: packs of entries; 2: one file per entry)."""

PACKAGE = Path(__file__).resolve().parent
FLUSH_EVERY = 32
"""New verdicts a process keeps before it writes them as a pack."""
MAX_PACKS = 16
"""Packs a folder may hold before the next process to read them merges them."""


@cache
def matcher_hash(root: Path = PACKAGE) -> str:
    """xxh3-128 of every file of the license package (code and reference texts) under `root`."""
    digest = xxhash.xxh3_128(f"license verdicts {FORMAT}\0".encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def folder() -> Path:
    base = Path(os.environ.get("CODEFOUNDRY_CACHE") or Path.home() / ".cache" / "codefoundry")
    return base / "license" / matcher_hash()


def entry_name(kind: str, text: str, threshold: float) -> str:
    """The entry of one question about `text` (`kind`: "file" or "notice" for a file's verdict, "identify")."""
    digest = xxhash.xxh3_128(f"{kind}\0{threshold!r}\0".encode())
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _ids(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        return None
    return tuple(value)


class _Store:
    """This process's view of one folder: the entries read from its packs, and the new ones not written yet."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.known: dict[str, tuple[str, ...]] = {}
        self.pending: dict[str, tuple[str, ...]] = {}
        self.lock = threading.Lock()
        packs = self._read()
        if len(packs) > MAX_PACKS and self._write(self.known):
            for pack in packs:
                pack.unlink(missing_ok=True)

    def _read(self) -> list[Path]:
        """Read every pack; the ones read whole."""
        try:
            names = sorted(os.listdir(self.where))
        except OSError:
            return []
        read = []
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                pack = json.loads((self.where / name).read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                continue  # gone (merged by another process) or damaged: its verdicts are judged again
            if not isinstance(pack, dict):
                continue
            for key, value in pack.items():
                if (ids := _ids(value)) is not None:
                    self.known[key] = ids
            read.append(self.where / name)
        return read

    def _write(self, entries: dict[str, tuple[str, ...]]) -> bool:
        if not entries:
            return True
        name = f"{os.getpid()}-{os.urandom(8).hex()}.json"
        try:
            self.where.mkdir(parents=True, exist_ok=True)
            tmp = self.where / f".{name}.tmp"
            tmp.write_text(json.dumps({k: list(v) for k, v in entries.items()}), encoding="utf-8")
            os.replace(tmp, self.where / name)  # whole or absent
        except OSError:
            return False
        return True

    def flush(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, {}
        self._write(pending)

    def add(self, name: str, ids: tuple[str, ...]) -> None:
        self.known[name] = ids
        with self.lock:
            self.pending[name] = ids
            full = len(self.pending) >= FLUSH_EVERY
        if full:
            self.flush()


_STORES: dict[Path, _Store] = {}


def _store() -> _Store:
    where = folder()
    if where not in _STORES:
        if not _STORES:
            _write_at_exit()
        _STORES[where] = _Store(where)
    return _STORES[where]


def flush() -> None:
    """Write every new verdict of this process (done at its exit)."""
    for store in list(_STORES.values()):
        store.flush()


def _forget_pending() -> None:
    # a forked worker starts with its parent's unwritten verdicts: the parent writes those
    for store in _STORES.values():
        store.pending = {}
        store.lock = threading.Lock()


def _flush_at_worker_exit(_: object) -> None:
    # multiprocessing's workers leave through os._exit, without atexit, after running the finalizers made in them
    from multiprocessing import util

    util.Finalize(None, flush, exitpriority=10)


@cache
def _write_at_exit() -> None:
    """Hooks that write a process's new verdicts when it exits (set once, when it first looks one up: importing
    multiprocessing costs a process that never does)."""
    from multiprocessing import util

    atexit.register(flush)
    util.Finalize(None, flush, exitpriority=10)  # this process may be a multiprocessing worker already
    os.register_at_fork(after_in_child=_forget_pending)
    util.register_after_fork(_Store, _flush_at_worker_exit)


def load(name: str) -> tuple[str, ...] | None:
    """The stored ids, or None when there is no readable entry."""
    return _store().known.get(name)


def store(name: str, ids: tuple[str, ...]) -> None:
    _store().add(name, tuple(ids))
