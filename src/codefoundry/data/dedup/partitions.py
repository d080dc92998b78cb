"""Hash-partitioned files of the dedup shuffle: each batch writes one file, each reduce reads its slice of each.

    <scratch>/map/<unit>/parts-0000004096.npy   .npy arrays back to back: P + 1 offsets, then the records
                                                of the batch starting at row 4096 of that unit ordered by
                                                partition (key % P): partition p is records[off[p]:off[p+1]];
                                                then the step's other arrays for the batch, if any (`extra`:
                                                near dedup's rank records and shingle sets)
    <scratch>/reduce/…                           one result file per partition

One file per batch whatever P is and whatever else the step keeps (a scratch file costs a create,
a rename and an unlink: more than writing its bytes); a reduce reads each batch's offsets and seeks
to its partition's records. Only keys and row ids travel; a reduce holds one partition, never all
signatures.
"""

from __future__ import annotations

import ast
import math
import mmap as mmap_module
import os
import re
import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from codefoundry.data.pipeline.executor import create


def save(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` atomically (temp file + rename; scratch files skip fsync: a rerun redoes them)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with create(tmp) as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def write_partitions(map_dir: Path, first_row: int, keys: np.ndarray, records: np.ndarray, n: int,
                     extra: Sequence[np.ndarray] = ()) -> None:
    """Write `records` (one per key) ordered by partition `keys % n`, after the partitions' offsets, then the
    `extra` arrays (`read_extra` gives them back)."""
    part = (keys % np.uint64(n)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(n + 1)).astype(np.int64)
    path = map_dir / f"parts-{first_row:010d}.npy"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with create(tmp) as f:
        np.lib.format.write_array(f, bounds, allow_pickle=False)
        np.lib.format.write_array(f, records[order], allow_pickle=False)
        for array in extra:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_SHAPE = re.compile(r"'shape': \(([0-9, ]*)\)")


def _read_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy array at `f`'s position, `f` left at its data. Our files' headers
    differ in their shape alone: the rest is parsed once per process (numpy's `literal_eval` per header was most
    of the cost of reading a small map file)."""
    start = f.tell()
    version = np.lib.format.read_magic(f)
    size_format = "<H" if version == (1, 0) else "<I"
    (length,) = struct.unpack(size_format, f.read(struct.calcsize(size_format)))
    header = f.read(length).decode("latin1")
    shape = _SHAPE.search(header)
    if version not in _HEADERS or shape is None:  # not one numpy writes for us: numpy's own reading
        f.seek(start)
        return _HEADERS[np.lib.format.read_magic(f)](f)
    fortran, dtype = _header_fields(header[:shape.start()] + "'shape': ()" + header[shape.end():])
    return tuple(int(n) for n in shape.group(1).split(",") if n.strip()), fortran, dtype


@lru_cache(maxsize=256)
def _header_fields(header: str) -> tuple[bool, np.dtype]:
    fields = ast.literal_eval(header)
    if not isinstance(fields, dict) or fields.keys() != {"descr", "fortran_order", "shape"} \
            or not isinstance(fields["fortran_order"], bool):
        raise ValueError(f"not a .npy header: {header!r}")
    return fields["fortran_order"], np.lib.format.descr_to_dtype(fields["descr"])


@lru_cache(maxsize=1 << 16)
def _layout(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, int, np.dtype]:
    """A batch file's partition offsets, where its records start and their dtype: parsed once per process (every
    reduce reads the same files; a header's parse is most of the cost of reading a small slice)."""
    with open(path, "rb") as f:
        shape, _, bounds_dtype = _read_header(f)
        bounds = np.fromfile(f, bounds_dtype, count=math.prod(shape))
        _, _, dtype = _read_header(f)
        return bounds, f.tell(), dtype


def _read_slice(path: Path, p: int) -> np.ndarray | None:
    """Partition `p`'s records of one batch file: its offsets, then a seek to the slice (one open, the layout keyed
    by the open file's size and time; a read into bytes costs less than `np.fromfile` on a small slice)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        bounds, start, dtype = _layout(str(path), st.st_size, st.st_mtime_ns)
        if p + 1 >= len(bounds):
            raise ValueError(f"{path} has {len(bounds) - 1} partitions, not more than {p}")
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if hi <= lo:
            return None
        f.seek(start + lo * dtype.itemsize)
        data = f.read((hi - lo) * dtype.itemsize)
    if len(data) != (hi - lo) * dtype.itemsize:
        raise ValueError(f"{path} is truncated: partition {p} needs {(hi - lo) * dtype.itemsize} bytes")
    return np.frombuffer(data, dtype)


@lru_cache(maxsize=1 << 16)
def _extra_layout(path: str, size: int, mtime_ns: int) -> tuple[tuple[int, tuple[int, ...], bool, np.dtype], ...]:
    """(offset, shape, fortran order, dtype) of each array after a batch file's records: parsed once per process
    (every reduce task's shingle-set lookups load the same files again)."""
    bounds, start, dtype = _layout(path, size, mtime_ns)
    out = []
    with open(path, "rb") as f:
        f.seek(start + int(bounds[-1]) * dtype.itemsize)
        while f.tell() < size:
            shape, fortran, array_dtype = _read_header(f)
            out.append((f.tell(), shape, fortran, array_dtype))
            f.seek(math.prod(shape) * array_dtype.itemsize, os.SEEK_CUR)
    return tuple(out)


def read_extra(path: Path, mmap: bool = False, first: int | None = None) -> list[np.ndarray]:
    """The `extra` arrays of a batch file, in the order written, or only the `first` ones (memory-mapped if `mmap`
    and the file is large, else read: one read for all of them, small files cost their syscalls more than bytes)."""
    st = os.stat(path)
    layout = _extra_layout(str(path), st.st_size, st.st_mtime_ns)[:first]
    if not layout:
        return []
    with open(path, "rb") as f:
        if mmap and st.st_size > MMAP_MIN_BYTES:
            data, base = mmap_module.mmap(f.fileno(), 0, access=mmap_module.ACCESS_READ), 0
        else:
            offset, shape, _, dtype = layout[-1]
            base = layout[0][0]
            f.seek(base)
            data = f.read(offset + math.prod(shape) * dtype.itemsize - base)
    return [np.frombuffer(data, dtype, count=math.prod(shape), offset=offset - base).reshape(
        shape, order="F" if fortran else "C") for offset, shape, fortran, dtype in layout]


def map_files(scratch: Path, unit: str | None = None) -> list[Path]:
    """Every batch file under `scratch/map` (or one unit's folder), in the order of `sorted(glob("*/parts-*.npy"))`
    (unit, then file name); listed with os.scandir, pathlib's glob was a good part of a small reduce."""
    root = os.path.join(scratch, "map")
    units = [unit] if unit is not None else sorted(e.name for e in _entries(root) if e.is_dir())
    return [Path(root, u, name) for u in units
            for name in sorted(e.name for e in _entries(os.path.join(root, u))
                               if e.name.startswith("parts-") and e.name.endswith(".npy"))]


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_partition(scratch: Path, p: int, dtype: np.dtype, files: list[Path] | None = None) -> np.ndarray:
    """Every unit's records of partition `p`, in unit and batch order (`files`: `map_files(scratch)` if known)."""
    chunks = [c for f in (map_files(scratch) if files is None else files) if (c := _read_slice(f, p)) is not None]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype)


def read_all(scratch: Path, pattern: str, dtype: np.dtype) -> np.ndarray:
    files = sorted(scratch.glob(pattern))
    return np.concatenate([np.load(f) for f in files]) if files else np.empty(0, dtype)


def unit_slice(sorted_ids: np.ndarray, unit_index: int) -> np.ndarray:
    """The ids of one work unit in a sorted id array (`UnitContext.row_ids`: unit_index << 32 | offset)."""
    lo, hi = np.searchsorted(sorted_ids, [unit_index << 32, (unit_index + 1) << 32])
    return np.asarray(sorted_ids[lo:hi])


def open_ids(files: list[Path]) -> list[np.ndarray]:
    """Sorted id files, memory-mapped (small ones read): a filter then touches only its unit's pages."""
    return [np.load(f, mmap_mode="r") if f.stat().st_size > MMAP_MIN_BYTES else np.load(f) for f in files]


MMAP_MIN_BYTES = 1 << 20


def unit_ids(arrays: list[np.ndarray], unit_index: int) -> np.ndarray:
    """The ids of one work unit across sorted id arrays: a filter holds one unit's ids, never all."""
    parts = [unit_slice(a, unit_index) for a in arrays]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def files_key(files: list[Path]) -> str:
    """Names, sizes and times of `files`: loaded results are reused while this stays the same."""
    return "|".join(f"{f}:{(st := f.stat()).st_size}:{st.st_mtime_ns}" for f in files)
