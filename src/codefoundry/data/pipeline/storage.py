"""Where a run reads and writes: local paths, or any fsspec URL (`s3://`, `gs://`, `memory://`, `file://`).

A dataset whose `--out` is a remote URL is made in a local staging directory (the executors'
`.work`, shards, card, manifest) and then published to the URL file by file, `manifest.json`
last, so a reader that sees the manifest sees a whole dataset. The staging directory is named
after the URL, so an interrupted run (driver crash, lost upload) resumes from its completed
units when the same command runs again. On a multi-node Ray cluster the staging root must be a
path every node sees (`CODEFOUNDRY_STAGING=/shared/…`), as for a local `--out`.

`file://` URLs and plain paths are local: no staging, no upload. Table sources (`.jsonl`, `.parquet`)
behind a URL are read through fsspec by each unit (`sources/remote.py`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from codefoundry.data.pipeline.executor import remove_tree
from codefoundry.errors import UserError

LOCAL_PROTOCOLS = {"file"}
"""Protocols taken as plain paths. fsspec's `local://` goes through fsspec like a remote one (tests use it)."""
STAGING_ENV = "CODEFOUNDRY_STAGING"
MANIFEST = "manifest.json"


def protocol(location: str | os.PathLike[str]) -> str | None:
    """The URL scheme of `location` ("s3", "memory", "file"), None for a plain path."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return scheme.lower() if sep and scheme.replace("+", "").replace("-", "").isalnum() else None


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether `location` is an fsspec URL that is not this machine's filesystem."""
    p = protocol(location)
    return p is not None and p not in LOCAL_PROTOCOLS


def local_path(location: str | os.PathLike[str]) -> Path:
    """A plain path or `file://` URL as a local path."""
    text = str(location)
    return Path(text.split("://", 1)[1]) if protocol(text) in LOCAL_PROTOCOLS else Path(text)


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for `url`; a clear error when its protocol is not installed."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise UserError(f"cannot open {url}: {e}".splitlines()[0],
                        "install the fsspec implementation for this protocol (s3fs, gcsfs, adlfs …)") from None
    return fs, path


def staging_dir(url: str) -> Path:
    """The local directory a dataset bound for `url` is made in (stable per URL, so a rerun resumes)."""
    root = Path(os.environ.get(STAGING_ENV) or Path.home() / ".cache" / "codefoundry" / "staging")
    return root / hashlib.sha256(url.encode()).hexdigest()[:16]


def remote_manifest(url: str) -> str | None:
    """The text of `url`/manifest.json, None when there is none (the dataset is not published there)."""
    fs, path = filesystem(url)
    target = f"{path.rstrip('/')}/{MANIFEST}"
    return fs.cat_file(target).decode("utf-8") if fs.exists(target) else None


def remote_is_empty(url: str) -> bool:
    fs, path = filesystem(url)
    return not fs.exists(path) or not fs.ls(path, detail=False)


def publish(local: Path, url: str) -> int:
    """Copy the finished dataset at `local` to `url`, manifest.json last; returns the number of files."""
    fs, path = filesystem(url)
    root = path.rstrip("/")
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST
                   and ".work" not in p.relative_to(local).parts)
    for f in [*files, local / MANIFEST]:
        target = f"{root}/{f.relative_to(local).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(f), target)
    return len(files) + 1


def remove_remote(url: str) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def clear_staging(local: Path) -> None:
    remove_tree(local)
