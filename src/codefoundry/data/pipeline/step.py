"""Steps: a batch of file records (an Arrow table) in, kept records and removed records out.

    class NoTabs(Filter):
        name = "no_tabs"
        def keep(self, record):               # None = keep, else a reason slug
            return "no_tabs:has_tab" if "\\t" in record["content"] else None

A `Filter` only decides (per record with `keep`, or vectorized with `reasons`); a `Mapper`
only rewrites rows (same count); a `GlobalStep` also has a shuffle (map → reduce) before
its filter phase. The base class counts rows in/kept/removed-per-reason, so every step's
numbers land in `stats.json` without code in the step. Steps are plain picklable objects:
an executor runs them in this process, in worker processes or on Ray.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from codefoundry.data.pipeline.schema import COLUMNS, REMOVED_SCHEMA, conform, with_reason


class StepResult(NamedTuple):
    kept: pa.Table     # files schema (steps may add columns only if they also drop them)
    removed: pa.Table  # REMOVED_SCHEMA: the rows as they came in, with `reason`


@dataclass
class StepStats:
    """What one step did: rows in, kept (= rows out), removed by reason, free-form counters, wall time.

    `seconds` (setup, batches, and a global step's map and filter phases) is the one field that
    differs between runs of the same input: the executor keeps it out of stats.json.
    """

    rows_in: int = 0
    kept: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def merge(self, other: StepStats) -> None:
        self.rows_in += other.rows_in
        self.kept += other.kept
        self.removed.update(other.removed)
        self.counters.update(other.counters)
        self.seconds += other.seconds

    def to_json(self) -> dict[str, Any]:
        return {"rows_in": self.rows_in, "kept": self.kept, "removed": dict(sorted(self.removed.items())),
                "counters": dict(sorted(self.counters.items())), "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepStats:
        return cls(data["rows_in"], data["kept"], Counter(data["removed"]), Counter(data.get("counters", {})),
                   data.get("seconds", 0.0))


class Step(ABC):
    """Base of every pipeline step. Subclasses set `name` and implement `process`."""

    name: ClassVar[str] = "step"

    def __init__(self) -> None:
        self.stats = StepStats()
        self._ready = False

    def setup(self) -> None:  # noqa: B027
        """Load heavy resources once per worker (called lazily before the first batch)."""

    @abstractmethod
    def process(self, batch: pa.Table) -> StepResult:
        """Map a batch to (kept rows, removed rows with their reason)."""

    def stat_update(self, key: str, n: int = 1) -> None:
        """Count anything (`self.stat_update("lang:Python")`); lands under the step in stats.json."""
        self.stats.counters[key] += n

    def __call__(self, batch: pa.Table) -> StepResult:
        start = time.perf_counter()
        if not self._ready:
            self.setup()
            self._ready = True
        result = self.process(batch)
        self.stats.seconds += time.perf_counter() - start
        self.stats.rows_in += batch.num_rows
        self.stats.kept += result.kept.num_rows
        if result.removed.num_rows:
            self.stats.removed.update(result.removed.column("reason").to_pylist())
        return result

    def take_stats(self) -> StepStats:
        """Return the stats so far and start counting afresh (executors call it per work unit)."""
        stats, self.stats = self.stats, StepStats()
        return stats

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ready"] = False  # resources are rebuilt by setup() in the receiving process
        return state


class Filter(Step):
    """A step that keeps or removes rows. Implement `keep(record)` or, vectorized, `reasons(batch)`."""

    columns: ClassVar[Sequence[str] | None] = None
    """Columns `keep` reads (None: all); fewer columns make the per-record path cheaper."""

    def keep(self, record: dict[str, Any]) -> str | None:
        """None to keep the record, else the reason slug for removing it (e.g. "basic:max_line_length")."""
        raise TypeError(f"{type(self).__name__} must define keep() or reasons()")

    def reasons(self, batch: pa.Table) -> Sequence[str | None]:
        """One entry per row: None to keep, a reason slug to remove."""
        cols = batch.select(list(self.columns)) if self.columns is not None else batch
        return [self.keep(r) for r in cols.to_pylist()]

    def process(self, batch: pa.Table) -> StepResult:
        return split(batch, self.reasons(batch))

    # -- use on your own `datasets.Dataset`: ds.filter(step.keep_mask, batched=True) ----------------
    def keep_mask(self, batch: dict[str, list[Any]]) -> list[bool]:
        """For `Dataset.filter(step.keep_mask, batched=True)`: True for rows this filter keeps."""
        return [r is None for r in self.reasons(from_batch(batch))]

    def annotate(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """For `Dataset.map(step.annotate, batched=True)`: adds a `reason` column (None = kept)."""
        return {"reason": list(self.reasons(from_batch(batch)))}


class Mapper(Step):
    """A step that rewrites rows (same number out as in). Implement `transform(batch)`."""

    @abstractmethod
    def transform(self, batch: pa.Table) -> pa.Table:
        """The batch with rows rewritten (same number of rows, same order)."""

    def process(self, batch: pa.Table) -> StepResult:
        return StepResult(self.transform(batch), NO_ROWS)

    def map_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """For `Dataset.map(step.map_batch, batched=True)`: the record columns, rewritten (others untouched)."""
        return self.transform(from_batch(batch)).to_pydict()


@dataclass(frozen=True)
class UnitContext:
    """Where a global step's map/filter phase is, for one work unit."""

    unit: str            # work-unit id, e.g. "000042"; sorts in plan order
    unit_index: int      # position of the unit in the plan
    scratch: Path        # this step's scratch folder, shared by all units (map/ and reduce/ live here)
    first_row: int = 0   # offset of this batch's first row in the unit's stream at this step

    def row_ids(self, n: int) -> pa.Array:
        """Stable ids of the batch's rows: (unit_index << 32) | offset. Equal in map and filter phases."""
        base = (self.unit_index << 32) + self.first_row
        return pa.array(range(base, base + n), pa.int64())

    @property
    def map_dir(self) -> Path:
        """Where this unit writes its map output (`map/<unit>/`)."""
        return self.scratch / "map" / self.unit

    @property
    def reduce_dir(self) -> Path:
        return self.scratch / "reduce"


class GlobalStep(Step):
    """A step that needs all units' data before it can decide (dedup): map → reduce → filter.

    1. map phase, per unit: `map(batch, ctx)` sees every batch that reaches this step and
       writes what it needs (signatures, hashes) under `ctx.map_dir`, typically one file per
       partition. The executor keeps the batches themselves (staged) for phase 3.
    2. reduce phase: `reduce(partition, scratch)` for each `partition in range(num_partitions)`,
       possibly in parallel; reads every unit's `map/*/` files for that partition and writes its
       result under `scratch / "reduce"`.
    3. filter phase, per unit: the staged batches go through `filter(batch, ctx)` (after
       `load(scratch)` once per worker), then through the steps after this one.
    Every phase's output must be a pure function of its input files, so reruns are identical.
    """

    num_partitions: int = 1

    @abstractmethod
    def map(self, batch: pa.Table, ctx: UnitContext) -> None:
        """Map phase: write what the reduce needs for this batch under `ctx.map_dir`."""

    @abstractmethod
    def reduce(self, partition: int, scratch: Path) -> None:
        """Reduce phase for one partition: read `scratch/map/*/`, write under `scratch/reduce/`."""

    def load(self, scratch: Path) -> None:
        """Load reduce results before the filter phase (once per worker)."""

    def timed_map(self, batch: pa.Table, ctx: UnitContext) -> None:
        """`map` with its wall time added to the step's stats (what executors call)."""
        start = time.perf_counter()
        self.map(batch, ctx)
        self.stats.seconds += time.perf_counter() - start

    @abstractmethod
    def filter(self, batch: pa.Table, ctx: UnitContext) -> Sequence[str | None]:
        """Filter phase: one entry per row, None to keep, a reason slug to remove."""

    def process(self, batch: pa.Table) -> StepResult:
        raise TypeError(f"{self.name} is a global step: executors run it by phases (map, reduce, process_unit)")

    def process_unit(self, batch: pa.Table, ctx: UnitContext) -> StepResult:
        """Filter phase with counting (what executors call)."""
        start = time.perf_counter()
        result = split(batch, self.filter(batch, ctx))
        self.stats.seconds += time.perf_counter() - start
        self.stats.rows_in += batch.num_rows
        self.stats.kept += result.kept.num_rows
        if result.removed.num_rows:
            self.stats.removed.update(result.removed.column("reason").to_pylist())
        return result


def from_batch(batch: dict[str, list[Any]]) -> pa.Table:
    """A `datasets` batch (dict of columns) as a record table: known columns kept, missing ones null."""
    n = len(next(iter(batch.values()))) if batch else 0
    known = {k: v for k, v in batch.items() if k in COLUMNS}
    table = pa.Table.from_pydict(known) if known else pa.table({"_": pa.nulls(n)})
    return conform(table)


NO_ROWS = pa.Table.from_batches([], schema=REMOVED_SCHEMA)
"""What a step that removed nothing returns as its removed rows (tables are immutable: one serves every call).
Not `empty_table()`: that imports pandas (through pyarrow's shim), which importing a step must not."""


def split(batch: pa.Table, reasons: Sequence[str | None] | pa.Array) -> StepResult:
    """Split `batch` by per-row reasons (None = keep) into kept rows and removed rows + reason."""
    if isinstance(reasons, pa.Array):
        arr = reasons
    else:
        reasons = reasons if isinstance(reasons, list) else list(reasons)
        if reasons.count(None) == len(reasons) == batch.num_rows:  # most batches lose no row: no Arrow array
            return StepResult(batch, NO_ROWS)                        # to build for them
        arr = pa.array(reasons, pa.string())
    if arr.null_count == len(arr):
        return StepResult(batch, NO_ROWS)
    keep = pc.is_null(arr)
    removed = batch.filter(pc.invert(keep))
    return StepResult(batch.filter(keep), with_reason(removed.select(list(COLUMNS)), arr.filter(pc.invert(keep))))


def run_steps(batch: pa.Table, steps: Iterable[Step]) -> tuple[pa.Table, list[pa.Table]]:
    """Apply local steps in order: (kept rows, removed tables one per step that removed any)."""
    removed = []
    for step in steps:
        if batch.num_rows == 0:
            break
        batch, dropped = step(batch)
        if dropped.num_rows:
            removed.append(dropped)
    return batch, removed
