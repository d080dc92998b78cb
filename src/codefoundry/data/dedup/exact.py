"""Exact dedup: one copy per content hash (the git blob sha1), the best by The Stack v2's ranking."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.dedup.partitions import files_key, open_ids, read_partition, save, unit_ids, write_partitions
from codefoundry.data.dedup.ranking import RANK_DTYPE, best_per_group, rank_records
from codefoundry.data.pipeline import GlobalStep, UnitContext


class ExactDedupConfig(StageConfig):
    """Exact dedup by content (git blob sha1), keeping the best copy by The Stack v2's ranking."""

    enabled: bool = True
    num_partitions: int = Field(16, ge=1)


KEYED = np.dtype([("k1", "<u8"), ("k2", "<u8"), *RANK_DTYPE.descr])
REASON = "exact_dedup"


_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _NIBBLE[ord(chr(_c).upper())] = _i


def content_keys(batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 halves of a 128-bit content key per row: the hexsha's first 32 hex digits (a row without one:
    those of its content's sha1)."""
    shas = batch.column("hexsha")
    shas = shas.combine_chunks() if isinstance(shas, pa.ChunkedArray) else shas
    absent = pc.fill_null(pc.equal(shas, ""), True)  # null or empty: no hexsha
    missing = np.flatnonzero(absent.to_numpy(zero_copy_only=False))
    if len(missing):  # rows without a hexsha: the sha1 of their text (never the whole column as Python strings)
        contents = batch.column("content").take(pa.array(missing)).to_pylist()
        digests = [hashlib.sha1((c or "").encode("utf-8", "surrogatepass")).hexdigest() for c in contents]
        shas = pc.replace_with_mask(shas, absent, pa.array(digests, shas.type))
    k1, k2 = _hex_keys(shas)
    return k1, k2


def _hex_keys(shas: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """`int(h[:16], 16)` and `int(h[16:32], 16)` of each string, from the column's bytes when every one is 32+
    hex digits (git's 40), else one string at a time."""
    lengths = pc.utf8_length(shas).to_numpy(zero_copy_only=False) if len(shas) else np.empty(0, np.int64)
    if len(shas) and (lengths >= 32).all() and shas.type == pa.string():
        _, offsets_buf, data_buf = shas.buffers()
        offsets = np.frombuffer(offsets_buf, np.int32, count=len(shas) + 1, offset=shas.offset * 4)
        data = np.frombuffer(data_buf, np.uint8)
        digits = _NIBBLE[data[offsets[:-1, None] + np.arange(32)]]
        if (digits != 255).all():
            weights = np.uint64(16) ** np.arange(15, -1, -1, dtype=np.uint64)
            halves = (digits.reshape(-1, 2, 16).astype(np.uint64) * weights).sum(axis=2, dtype=np.uint64)
            return np.ascontiguousarray(halves[:, 0]), np.ascontiguousarray(halves[:, 1])
    hexes = shas.to_pylist()
    k1 = np.array([int(h[:16], 16) for h in hexes], dtype=np.uint64)
    k2 = np.array([int(h[16:32], 16) for h in hexes], dtype=np.uint64)
    return k1, k2


class ExactDedup(GlobalStep):
    """Keep one row per distinct content; the others leave with reason `exact_dedup`."""

    name = "exact_dedup"

    def __init__(self, config: ExactDedupConfig | None = None) -> None:
        super().__init__()
        self.config = config or ExactDedupConfig()
        self.num_partitions = self.config.num_partitions
        self._removed: tuple[str, list[np.ndarray]] | None = None  # (files_key, memory-mapped sorted ids)
        self._unit: tuple[int, np.ndarray] | None = None

    def map(self, batch: pa.Table, ctx: UnitContext) -> None:
        ranks = rank_records(batch, ctx.row_ids(batch.num_rows).to_numpy())
        k1, k2 = content_keys(batch)
        records = np.zeros(batch.num_rows, dtype=KEYED)
        records["k1"], records["k2"] = k1, k2
        for name in RANK_DTYPE.names:
            records[name] = ranks[name]
        write_partitions(ctx.map_dir, ctx.first_row, k1, records, self.num_partitions)

    def reduce(self, partition: int, scratch: Path) -> None:
        records = read_partition(scratch, partition, KEYED)
        remove = np.empty(0, np.int64)
        if len(records):
            _, group = np.unique(records[["k1", "k2"]], return_inverse=True)
            keep = best_per_group(group.reshape(-1), records[list(RANK_DTYPE.names)])
            remove = np.sort(records["id"][~keep])
        save(scratch / "reduce" / f"remove-{partition:04d}.npy", remove)

    def load(self, scratch: Path) -> None:
        files = sorted((scratch / "reduce").glob("remove-*.npy"))
        key = files_key(files)
        if self._removed is None or self._removed[0] != key:  # once per worker, not per unit
            self._removed, self._unit = (key, open_ids(files)), None

    def __getstate__(self) -> dict[str, object]:
        return {**super().__getstate__(), "_removed": None, "_unit": None}  # memory maps stay in their process

    def filter(self, batch: pa.Table, ctx: UnitContext) -> Sequence[str | None]:
        if self._unit is None or self._unit[0] != ctx.unit_index:  # one unit's ids in memory, never all
            self._unit = (ctx.unit_index, unit_ids(self._removed[1] if self._removed else [], ctx.unit_index))
        if not len(self._unit[1]):  # most units hold no duplicate
            return [None] * batch.num_rows
        ids = ctx.row_ids(batch.num_rows).to_numpy()
        gone = np.isin(ids, self._unit[1])
        return [REASON if g else None for g in gone]
