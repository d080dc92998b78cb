"""License-file verdicts kept across runs, in `$CODEFOUNDRY_CACHE/license/` (default `~/.cache/codefoundry`).

Matching a license text against the references costs milliseconds per distinct text, and the same
texts come back in every curation of overlapping sources (a venv's distributions, a re-run with
other settings, the next crawl of the same repositories). A verdict is stored per text (its hash,
the NOTICE-like flag and the threshold) in a folder named after a hash of everything that decides
it: this package's code and reference texts. A change to either starts an empty folder; an entry
that cannot be read is judged again; a cache that cannot be written only costs the work again.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import xxhash

FORMAT = 2
"""Version of the entries' layout."""

PACKAGE = Path(__file__).resolve().parent


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
    return digest.hexdigest() + ".json"


def load(name: str) -> tuple[str, ...] | None:
    """The stored ids, or None when there is no readable entry."""
    try:
        ids = json.loads((folder() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return tuple(ids)


def store(name: str, ids: tuple[str, ...]) -> None:
    path = folder() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(list(ids)), encoding="utf-8")
        os.replace(tmp, path)  # whole or absent, whichever worker writes last
    except OSError:
        pass
