"""Hash-partitioned files of the dedup shuffle: each unit writes one file per partition, each reduce reads one.

    <scratch>/map/<unit>/p0003-0000004096.npy   records whose key falls in partition 3, from the
                                                 batch starting at row 4096 of that unit
    <scratch>/map/<unit>/nodes-0000004096.npy    rank records of that batch's rows
    <scratch>/reduce/…                           one result file per partition

Only keys and row ids travel; a reduce holds one partition, never all signatures.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` atomically (temp file + rename; scratch files skip fsync: a rerun redoes them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def write_partitions(map_dir: Path, first_row: int, keys: np.ndarray, records: np.ndarray, n: int) -> None:
    """Write `records` (one per key) to `map_dir/p<part>-<first_row>.npy` by `keys % n`."""
    part = (keys % np.uint64(n)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(n + 1))
    for p in range(n):
        lo, hi = bounds[p], bounds[p + 1]
        if hi > lo:
            save(map_dir / f"p{p:04d}-{first_row:010d}.npy", records[order[lo:hi]])


def read_partition(scratch: Path, p: int, dtype: np.dtype) -> np.ndarray:
    """Every unit's records of partition `p`, in unit and batch order."""
    files = sorted((scratch / "map").glob(f"*/p{p:04d}-*.npy"))
    return np.concatenate([np.load(f) for f in files]) if files else np.empty(0, dtype)


def read_all(scratch: Path, pattern: str, dtype: np.dtype) -> np.ndarray:
    files = sorted(scratch.glob(pattern))
    return np.concatenate([np.load(f) for f in files]) if files else np.empty(0, dtype)
