"""Hash-partitioned files of the dedup shuffle: each unit writes one file per partition, each reduce reads one.

    <scratch>/map/<unit>/parts-0000004096.npy         the records of the batch starting at row 4096 of that
                                                      unit, ordered by partition (key % P)
    <scratch>/map/<unit>/parts-0000004096.bounds.npy  P + 1 offsets: partition p is records[bounds[p]:bounds[p+1]]
    <scratch>/map/<unit>/nodes-0000004096.npy         rank records of that batch's rows
    <scratch>/reduce/…                                one result file per partition

Two files per batch whatever P is (scratch files cost more to delete than to write on some disks);
a reduce memory-maps each batch's file and reads only its partition's slice. Only keys and row
ids travel; a reduce holds one partition, never all signatures.
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
    """Write `records` (one per key) ordered by partition `keys % n`, and the partitions' offsets."""
    part = (keys % np.uint64(n)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(n + 1)).astype(np.int64)
    save(map_dir / f"parts-{first_row:010d}.npy", records[order])
    save(map_dir / f"parts-{first_row:010d}.bounds.npy", bounds)


def read_partition(scratch: Path, p: int, dtype: np.dtype) -> np.ndarray:
    """Every unit's records of partition `p`, in unit and batch order."""
    chunks = []
    for bounds_file in sorted((scratch / "map").glob("*/parts-*.bounds.npy")):
        bounds = np.load(bounds_file)
        if p + 1 >= len(bounds):
            raise ValueError(f"{bounds_file} has {len(bounds) - 1} partitions, not more than {p}")
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if hi > lo:
            records = np.load(bounds_file.with_name(bounds_file.name.replace(".bounds.npy", ".npy")), mmap_mode="r")
            chunks.append(np.array(records[lo:hi]))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype)


def read_all(scratch: Path, pattern: str, dtype: np.dtype) -> np.ndarray:
    files = sorted(scratch.glob(pattern))
    return np.concatenate([np.load(f) for f in files]) if files else np.empty(0, dtype)


def unit_slice(sorted_ids: np.ndarray, unit_index: int) -> np.ndarray:
    """The ids of one work unit in a sorted id array (`UnitContext.row_ids`: unit_index << 32 | offset)."""
    lo, hi = np.searchsorted(sorted_ids, [unit_index << 32, (unit_index + 1) << 32])
    return np.asarray(sorted_ids[lo:hi])


def unit_ids(files: list[Path], unit_index: int) -> np.ndarray:
    """The ids of one work unit across sorted id files, read by memory map: a filter holds one unit's ids."""
    parts = [unit_slice(np.load(f, mmap_mode="r"), unit_index) for f in files]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)
