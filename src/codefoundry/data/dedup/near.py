"""Near dedup: MinHash LSH over 5-token shingles, clusters by connected components, keep the best per cluster.

Phases (a `GlobalStep`; any executor runs them, the partitions are its unit of distribution):

    map, per batch     signatures of the batch → one key per (band, bucket), ordered by key % P, then the
                       rows' rank records [and shingle sets if verify]: one parts-*.npy (`partitions.py`)
    reduce, per part   sort keys; rows sharing a key are candidate pairs (edges to the bucket's first
                       row), optionally verified by true Jaccard; components inside the partition are
                       written as (row, local root) pairs: edges-<p>.npy
    load (once)        components across partitions from those pairs, the best-ranked row of each
                       component stays, the rest → remove.npy (computed by the first worker, under a lock)
    filter, per unit   rows in remove.npy leave with reason `near_dedup`
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from filelock import FileLock
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.dedup.components import components
from codefoundry.data.dedup.minhash import (
    _M1,
    _M2,
    _ROUND,
    U64,
    jaccard,
    mix64,
    shingle_hashes,
    signatures_of,
    token_hashes,
    unique_per_doc,
)
from codefoundry.data.dedup.minhash import optimal_param as _optimal_param
from codefoundry.data.dedup.partitions import (
    files_key,
    map_files,
    open_ids,
    read_all,
    read_extra,
    read_partition,
    save,
    unit_ids,
    write_partitions,
)
from codefoundry.data.dedup.ranking import RANK_DTYPE, best_per_group, rank_records
from codefoundry.data.pipeline import GlobalStep, UnitContext


class NearDedupOverride(StageConfig):
    """Per-language changes to the near-dedup parameters (unset fields keep the global value)."""

    ngram_size: int | None = Field(None, ge=1)
    num_perm: int | None = Field(None, ge=2)
    threshold: float | None = Field(None, gt=0, lt=1)
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    false_positive_weight: float | None = Field(None, gt=0, lt=1)


def _language_defaults() -> dict[str, NearDedupOverride]:
    # bigcode-dataset visual_inspection.csv near-dedup columns: Mathematica .nb 3-grams, SAS threshold 0.6
    return {"Mathematica": NearDedupOverride(ngram_size=3), "SAS": NearDedupOverride(threshold=0.6)}


class NearDedupConfig(StageConfig):
    """MinHash LSH near-deduplication (bigcode-dataset `minhash_deduplication.py`)."""

    enabled: bool = True
    ngram_size: int = Field(5, ge=1)             # bigcode-dataset: 5-token shingles
    num_perm: int = Field(256, ge=2)             # bigcode-dataset: 256 permutations
    threshold: float = Field(0.7, gt=0, lt=1)    # bigcode-dataset: Jaccard 0.7
    bands: int | None = Field(None, ge=1)        # None: optimal_param(threshold, num_perm, fp weight)
    rows: int | None = Field(None, ge=1)         # None: optimal_param → 25×10 at 0.7/256, weights 0.5/0.5
    false_positive_weight: float | None = Field(None, gt=0, lt=1)
    """Weight of false positives in the bands/rows optimisation (false negatives get 1 − it). None: 0.5 as
    bigcode-dataset without `verify` (→ 25×10), 0.05 with it (→ 36×7: verification removes the false positives,
    so the S-curve leans to recall)."""
    min_tokens: int = Field(5, ge=1)             # bigcode-dataset min_ngram_size: fewer tokens → not near-deduped
    method: Literal["one_permutation", "permutations"] = "one_permutation"
    """How the num_perm values are computed: one hash per shingle binned with optimal densification (fast,
    O(shingles)), or num_perm multiply-add permutations as datasketch/bigcode do (O(shingles × num_perm))."""
    seed: int = 42                               # bigcode-dataset seed
    verify: bool = True
    """Check the exact Jaccard of candidate pairs and keep only edges ≥ threshold (each document's shingle set is
    written in the map phase). False: BigCode's unverified LSH (25×10 at 0.7: F1 ≈ 0.85 on our labelled set)."""
    num_partitions: int = Field(16, ge=1)
    """Band buckets are hash-partitioned into this many reduce tasks: a reduce holds about
    rows × bands × 16 bytes / num_partitions (raise it to bound a worker's memory on a large dataset)."""
    verify_cache_units: int = Field(32, ge=1)
    """With `verify`: how many work units' shingle sets a reduce task keeps loaded at once (least recently used
    leave first); bounds a reduce's memory with the partition's records."""
    languages: dict[str, NearDedupOverride] = Field(default_factory=_language_defaults)
    """Per-language overrides, keyed by The Stack's language name. A language with overrides is deduplicated
    only against files of the same parameters."""


BUCKET = np.dtype([("key", "<u8"), ("id", "<i8")])
PAIR = np.dtype([("node", "<i8"), ("root", "<i8")])
SET_INDEX = np.dtype([("id", "<i8"), ("lo", "<i8"), ("hi", "<i8"), ("threshold", "<f8")])
SET_ROW = np.dtype([*SET_INDEX.descr, ("file", "<i8")])
REASON = "near_dedup"


@dataclass(frozen=True)
class LshParams:
    """Resolved parameters of one parameter group (the global ones, or a language's overrides)."""

    ngram_size: int
    num_perm: int
    threshold: float
    bands: int
    rows: int

    @classmethod
    def resolve(cls, ngram_size: int, num_perm: int, threshold: float, bands: int | None,
                rows: int | None, fp_weight: float = 0.5) -> LshParams:
        if bands is None or rows is None:
            b, r = _optimal_param(threshold, num_perm, fp_weight, 1 - fp_weight)
            bands, rows = bands or b, rows or r
        if bands * rows > num_perm:
            raise ValueError(f"bands × rows must be ≤ num_perm: {bands} × {rows} > {num_perm}")
        return cls(ngram_size, num_perm, threshold, bands, rows)


def band_keys(sig: np.ndarray, params: LshParams, group: int) -> np.ndarray:
    """One uint64 bucket key per (document, band): [n_docs, bands], distinct across bands and groups."""
    n = sig.shape[0]
    cols = sig[:, : params.bands * params.rows].reshape(n, params.bands, params.rows).astype(U64)
    with np.errstate(over="ignore"):
        h = np.full((n, params.bands), U64(group) * _M2, dtype=U64) + np.arange(params.bands, dtype=U64) * _ROUND
        for k in range(params.rows):
            h = (h ^ cols[:, :, k]) * _M1
    return mix64(h)


class NearDedup(GlobalStep):
    """MinHash LSH near-deduplication; removed rows get reason `near_dedup`."""

    name = "near_dedup"

    def __init__(self, config: NearDedupConfig | None = None) -> None:
        super().__init__()
        self.config = config or NearDedupConfig()
        self.num_partitions = self.config.num_partitions
        c = self.config
        fp = c.false_positive_weight or (0.05 if c.verify else 0.5)
        self.default = LshParams.resolve(c.ngram_size, c.num_perm, c.threshold, c.bands, c.rows, fp)
        self.overrides = {lang: LshParams.resolve(o.ngram_size or c.ngram_size, o.num_perm or c.num_perm,
                                                  o.threshold or c.threshold, o.bands, o.rows,
                                                  o.false_positive_weight or fp)
                          for lang, o in sorted(c.languages.items())}
        self._removed: tuple[str, list[np.ndarray]] | None = None  # (files_key, memory-mapped sorted ids)
        self._unit: tuple[int, np.ndarray] | None = None
        self._sets: tuple[tuple, SetStore] | None = None  # (map files' stamp, store) kept between reduce tasks

    # -- map -------------------------------------------------------------------------------------
    def groups(self, langs: list[str | None]) -> list[tuple[int, LshParams, np.ndarray]]:
        """(group id, params, row indices) for the rows of each parameter group present in `langs`."""
        names = list(self.overrides)
        index = np.array([names.index(x) + 1 if x in self.overrides else 0 for x in langs], dtype=np.int64)
        out = []
        for g in np.unique(index):
            params = self.default if g == 0 else self.overrides[names[g - 1]]
            out.append((int(g), params, np.flatnonzero(index == g)))
        return out

    def map(self, batch: pa.Table, ctx: UnitContext) -> None:
        ids = ctx.row_ids(batch.num_rows).to_numpy()
        content = batch.column("content")  # Arrow strings: shingled from their buffer, no Python string per row
        keys_out, recs_out, nodes = [], [], []
        set_index, set_hashes, set_size = [], [], 0
        for group, params, rows in self.groups(batch.column("lang").to_pylist()):
            chunk = content if len(rows) == batch.num_rows else content.take(rows)
            hashes, docs = shingle_hashes(chunk, params.ngram_size)
            sig, has = signatures_of(hashes, docs, len(chunk), params.num_perm, self.config.seed, self.config.method)
            has &= self._long_enough(chunk, has)
            rows, sig = rows[has], sig[has]
            if not len(rows):
                continue
            keys = band_keys(sig, params, group)
            keys_out.append(keys.reshape(-1))
            recs = np.zeros(keys.size, dtype=BUCKET)
            recs["key"] = keys.reshape(-1)
            recs["id"] = np.repeat(ids[rows], params.bands)
            recs_out.append(recs)
            nodes.append(rows)
            if self.config.verify:
                uniq, offsets = unique_per_doc(hashes, docs, len(chunk))
                index = np.zeros(len(rows), dtype=SET_INDEX)
                index["id"], index["threshold"] = ids[rows], params.threshold
                index["lo"], index["hi"] = offsets[:-1][has] + set_size, offsets[1:][has] + set_size
                set_index.append(index)
                set_hashes.append(uniq)
                set_size += len(uniq)
        if not recs_out:
            return
        rows = np.sort(np.concatenate(nodes))
        ranked = batch.select(["license_type", "stars", "forks"]).take(rows)  # not the text: a copy of it costs
        extra = [rank_records(ranked, ids[rows])]
        if self.config.verify:
            extra += [np.concatenate(set_index), np.concatenate(set_hashes)]
        write_partitions(ctx.map_dir, ctx.first_row, np.concatenate(keys_out), np.concatenate(recs_out),
                         self.num_partitions, extra)

    def _long_enough(self, texts: pa.Array | pa.ChunkedArray, has: np.ndarray) -> np.ndarray:
        if self.config.min_tokens <= self.default.ngram_size:
            return has
        counts = [len(token_hashes(t.encode("utf-8", "surrogatepass") + b"\0")[0]) if h else 0
                  for t, h in zip((t or "" for t in texts.to_pylist()), has, strict=True)]
        return np.array(counts, dtype=np.int64) >= self.config.min_tokens

    # -- reduce ------------------------------------------------------------------------------------
    def reduce(self, partition: int, scratch: Path) -> None:
        files = map_files(scratch)  # listed once for the records and the shingle sets' stamp
        recs = read_partition(scratch, partition, BUCKET, files)
        pairs = np.empty(0, PAIR)
        if len(recs):
            recs = recs[np.lexsort((recs["id"], recs["key"]))]
            first = np.ones(len(recs), dtype=bool)
            first[1:] = recs["key"][1:] != recs["key"][:-1]
            head = np.maximum.accumulate(np.where(first, np.arange(len(recs)), 0))
            u, v = recs["id"][head[~first]], recs["id"][~first]
            keep = u != v
            u, v = u[keep], v[keep]
            if len(u):
                edges = np.unique(np.stack([u, v], axis=1), axis=0)
                u, v = edges[:, 0], edges[:, 1]
                if self.config.verify:
                    ok = self._set_store(scratch, files).verify(u, v)
                    u, v = u[ok], v[ok]
                nodes, roots = components(u, v)
                pairs = np.zeros(len(nodes), dtype=PAIR)
                pairs["node"], pairs["root"] = nodes, roots
        save(scratch / "reduce" / f"edges-{partition:04d}.npy", pairs)

    def _set_store(self, scratch: Path, files: list[Path]) -> SetStore:
        """The shingle-set store of the last reduce task while the map files (`files`) are the same ones (names,
        sizes, times): a process's reduce tasks share its loaded units instead of each loading them again."""
        stamp = (str(scratch), self.config.verify_cache_units,
                 tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(f)]))
        if self._sets is None or self._sets[0] != stamp:
            self._sets = (stamp, SetStore(scratch, self.config.verify_cache_units))
        return self._sets[1]

    # -- load + filter -------------------------------------------------------------------------------
    def load(self, scratch: Path) -> None:
        self._sets = None  # the reduce phase is over: its loaded shingle sets go
        result = scratch / "reduce" / "remove.npy"
        try:
            held = self._removed is not None and self._removed[0] == files_key([result])
        except FileNotFoundError:
            held = False
        if held:
            return  # this worker holds the result already (load runs per unit: no lock file per unit)
        with FileLock(str(scratch / "reduce" / "remove.lock")):
            if not result.exists():
                save(result, removal_set(scratch))
        key = files_key([result])
        if self._removed is None or self._removed[0] != key:  # once per worker, not per unit
            self._removed, self._unit = (key, open_ids([result])), None

    def __getstate__(self) -> dict[str, object]:
        # memory maps and loaded sets stay in their process
        return {**super().__getstate__(), "_removed": None, "_unit": None, "_sets": None}

    def filter(self, batch: pa.Table, ctx: UnitContext) -> Sequence[str | None]:
        if self._unit is None or self._unit[0] != ctx.unit_index:  # one unit's ids in memory, never all
            self._unit = (ctx.unit_index, unit_ids(self._removed[1] if self._removed else [], ctx.unit_index))
        if not len(self._unit[1]):  # most units hold no near-duplicate
            return [None] * batch.num_rows
        ids = ctx.row_ids(batch.num_rows).to_numpy()
        gone = np.isin(ids, self._unit[1])
        return [REASON if g else None for g in gone]


def clusters(scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, component label) of every row in a near-duplicate cluster, merged across partitions."""
    pairs = read_all(scratch / "reduce", "edges-*.npy", PAIR)
    return components(pairs["node"], pairs["root"])


def removal_set(scratch: Path) -> np.ndarray:
    """Sorted ids of every clustered row except the best-ranked one of its cluster."""
    nodes, labels = clusters(scratch)
    if not len(nodes):
        return np.empty(0, np.int64)
    # only clustered rows' ranks are kept, file by file: memory follows the duplicates, not the dataset
    parts = [r[np.isin(r["id"], nodes)] for f in map_files(scratch) for r in read_extra(f, first=1)]
    ranks = np.concatenate(parts) if parts else np.empty(0, RANK_DTYPE)
    ranks = ranks[np.argsort(ranks["id"])]
    label_of = labels[np.searchsorted(nodes, ranks["id"])]
    keep = best_per_group(label_of, ranks)
    return np.sort(ranks["id"][~keep])


class SetStore:
    """Shingle sets saved by the map phase, loaded one unit at a time to verify candidate pairs."""

    def __init__(self, scratch: Path, max_units: int = 32) -> None:
        self.scratch = scratch
        self.max_units = max_units
        self._units: OrderedDict[int, tuple[np.ndarray, list[np.ndarray]]] = OrderedDict()

    def _unit(self, unit: int) -> tuple[np.ndarray, list[np.ndarray]]:
        if unit in self._units:
            self._units.move_to_end(unit)
        else:
            while len(self._units) >= self.max_units:
                self._units.popitem(last=False)
            indexes, hashes = [], []
            for f in map_files(self.scratch, f"{unit:06d}"):
                extra = read_extra(f, mmap=True)
                if len(extra) == 3:  # rank records, then the sets' index and hashes (`verify`)
                    indexes.append(_with_file(np.asarray(extra[1]), len(hashes)))
                    hashes.append(extra[2])
            index = np.concatenate(indexes) if indexes else np.empty(0, SET_ROW)
            self._units[unit] = (index[np.argsort(index["id"])], hashes)
        return self._units[unit]

    def get(self, row: int) -> tuple[np.ndarray, float]:
        index, hashes = self._unit(row >> 32)  # UnitContext.row_ids: (unit_index << 32) | offset
        rec = index[np.searchsorted(index["id"], row)]
        return np.asarray(hashes[rec["file"]][rec["lo"]:rec["hi"]]), float(rec["threshold"])

    def verify(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """True where the pair's exact Jaccard reaches its group's threshold."""
        ok = np.zeros(len(u), dtype=bool)
        for i, (a, b) in enumerate(zip(u.tolist(), v.tolist(), strict=True)):
            sa, t = self.get(a)
            sb, _ = self.get(b)
            ok[i] = jaccard(sa, sb) >= t
        return ok


def _with_file(index: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros(len(index), dtype=SET_ROW)
    for name in SET_INDEX.names:
        out[name] = index[name]
    out["file"] = k
    return out
