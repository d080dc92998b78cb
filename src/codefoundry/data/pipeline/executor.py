"""The local executor: runs a pipeline over work units in worker processes, resumably.

Layout of a run in progress (under the output dir; removed when the run completes):

    .work/plan.json                      units (in order) + the run key (config + sources)
    .work/phase0/<unit>.removed.arrow    rows removed in phase 0 (with `reason`), staged as Arrow IPC (written
                                         and memory-mapped back at a fraction of Parquet's cost; the removed
                                         shards are their only Parquet encode); absent when none were
    .work/phase0/<unit>.done             the unit's phase, done, written last (renamed into place): the rows that
                                         survived phase 0's steps, staged alike for phase 1 (the last phase's
                                         are encoded to Parquet once, in the shards), then an empty record
                                         batch whose metadata is the marker: {"kept_rows": n, "steps": the
                                         phase's per-step stats for this unit}
    .work/global/<step>/map/<unit>/…     a global step's map output; reduce/ its reduce output
    .work/global/<step>/reduce/<p>.done  reduce completion marker per partition ({"seconds": wall time})

Phases: the step list is cut at each `GlobalStep`. Phase 0 reads the unit and runs the
local steps before the first global step, whose `map` sees the survivors; a reduce then
runs per partition; phase 1 feeds the staged rows through the global step's filter and
the next local steps, and so on. The last phase's kept rows become the dataset.

Resumption is by markers: a unit (or partition) with a `.done` file is skipped; one without
is redone from scratch (its outputs are overwritten). The marker travels in the kept rows' file and a
unit's files are not in a folder of their own: creating an inode (a file, a folder) was the costliest
syscall of a run on ext4, so a unit's phase makes one or two. A `.work` an older version left (a JSON
`<unit>.done` beside `phase0/<unit>/kept.arrow` and `removed.arrow` or `removed.parquet`) resumes with
its finished units (`finished_unit`). Scratch files
are not fsynced (only the dataset's files are): a marker whose unit's kept file does not hold the
rows it names (a machine crash lost it) counts as missing. Finalizing (shards, stats, card) reads
only `.work`, so it is redone whole if interrupted. Determinism: units are processed
independently and gathered in plan order, so worker count and timing never change the bytes.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codefoundry.atomic import TEMP_PREFIX, atomic_open, clean_temp_files
from codefoundry.console import progress_bar
from codefoundry.data.pipeline.schema import FILES_SCHEMA, REASON, REMOVED_SCHEMA, conform
from codefoundry.data.pipeline.stats import count_files, merge, merge_all
from codefoundry.data.pipeline.step import GlobalStep, Step, StepStats, UnitContext, run_steps

log = logging.getLogger(__name__)
WORK = ".work"
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": ["lang", "ext", "license_type", "repo_name",
                                                                             REASON]}


class WorkUnit(Protocol):
    """One independent slice of the input (a repository, a chunk of a table). Must pickle."""

    def describe(self) -> str:
        """A stable one-line description, recorded in the plan (e.g. "git acme/tools @ /src/tools")."""
        ...

    def read(self) -> Iterator[pa.Table]:
        """Batches in REMOVED_SCHEMA: rows with a null `reason` go on; others are removed as given."""
        ...


@dataclass(frozen=True)
class Phase:
    index: int
    steps: list[Step]             # local steps of this phase, in order
    entry: GlobalStep | None      # global step whose filter opens this phase (None for phase 0)
    exit: GlobalStep | None       # global step whose map closes this phase (None for the last)


def phases(steps: Sequence[Step]) -> list[Phase]:
    """Cut the step list at each global step."""
    out: list[Phase] = []
    entry: GlobalStep | None = None
    local: list[Step] = []
    for step in steps:
        if isinstance(step, GlobalStep):
            out.append(Phase(len(out), local, entry, step))
            entry, local = step, []
        else:
            local.append(step)
    out.append(Phase(len(out), local, entry, None))
    return out


def create(path: Path) -> BinaryIO:
    """`open(path, "wb")`, making its folder first only when it is missing (most writes go to one that exists:
    a `mkdir` per file was a syscall each)."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")


@contextlib.contextmanager
def scratch_open(path: Path) -> Iterator[IO[bytes]]:
    """Like `atomic_open` (temp file + rename) without its fsync: `.work` files are scratch, and a unit whose
    files a machine crash lost is redone (`_unit_done` checks them), so only the dataset's own files pay for
    durability."""
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with create(tmp) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_parquet(path: Path, tables: Iterator[pa.Table], schema: pa.Schema, durable: bool = True,
                   skip_empty: bool = False) -> int:
    """Write `tables` as one parquet file; `durable=False` for scratch; `skip_empty`: no file for no rows."""
    rows = 0
    writer: pq.ParquetWriter | None = None
    with contextlib.ExitStack() as stack:
        for table in tables:
            if not table.num_rows:
                continue
            if writer is None:
                f = stack.enter_context(atomic_open(path, "wb") if durable else scratch_open(path))
                writer = stack.enter_context(pq.ParquetWriter(f, schema, **PARQUET_OPTIONS))
            writer.write_table(conform(table, schema))
            rows += table.num_rows
        if writer is None:
            if skip_empty:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # an earlier, interrupted attempt's file
                return 0
            f = stack.enter_context(atomic_open(path, "wb") if durable else scratch_open(path))
            stack.enter_context(pq.ParquetWriter(f, schema, **PARQUET_OPTIONS))
    return rows


SCAN_BATCH_ROWS = 1 << 17
"""`pq.read_table`'s batch size: its table has one chunk per row group, and per this many rows of one."""


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """`pq.read_table(path, columns=columns)`, chunked alike (a shard written from it has the same pages),
    without the dataset layer that made each call ~7x costlier on the small files a run writes."""
    pf = pq.ParquetFile(path)
    parts = []
    for i in range(pf.metadata.num_row_groups):
        group = pf.read_row_group(i, columns=columns)
        parts += [group.slice(start, SCAN_BATCH_ROWS) for start in range(0, group.num_rows, SCAN_BATCH_ROWS)]
    if parts:
        return pa.concat_tables(parts)
    empty = pf.schema_arrow.empty_table()
    return empty.select(columns) if columns is not None else empty


def _write_scratch_json(path: Path, obj: Any) -> None:
    with scratch_open(path) as f:
        f.write((json.dumps(obj, sort_keys=True) + "\n").encode())


DONE_SUFFIX = ".done"
"""`<unit>.done`: a unit's finished phase, its kept rows and marker (Arrow IPC, see the module's docstring)."""
REMOVED_SUFFIX = ".removed.arrow"
"""`<unit>.removed.arrow`: its removed rows, when there are any."""
MARKER = b"codefoundry.done"
"""The metadata key of a done file's last record batch (empty): the unit's marker, as JSON."""
ARROW_MAGIC = b"ARROW1"
LEGACY_KEPT_NAME = "kept.arrow"
LEGACY_REMOVED_NAMES = ("removed.arrow", "removed.parquet")
"""A unit's files as older versions staged them, in a folder per unit beside a JSON `<unit>.done` (`kept.arrow`,
and its removed rows as Arrow or, older still, Parquet): a run they left unfinished resumes with the units they
finished."""


@dataclass(frozen=True)
class FinishedUnit:
    """A unit's finished phase: where its rows are, and what its marker says."""

    kept: Path
    removed: list[Path]
    marker: dict[str, Any]


def finished_unit(work: Path, phase_index: int, uid: str, verify: bool = True) -> FinishedUnit | None:
    """A unit's phase when it is finished: its done file exists and holds the rows its marker names (a machine crash
    can lose unsynced scratch files; a process crash cannot), or an older version's JSON marker names the rows of
    the folder beside it. None when it is not. `verify=False` (a unit this run saw finish): the marker alone, read
    without mapping the file (a memory map's page faults made opening the file cost twice as much)."""
    folder = work / f"phase{phase_index}"
    done = folder / f"{uid}{DONE_SUFFIX}"
    try:
        with pa.memory_map(str(done)) if verify else pa.OSFile(str(done)) as source:
            if source.read(len(ARROW_MAGIC)) == ARROW_MAGIC:
                reader = pa.ipc.open_file(source)
                last = reader.num_record_batches - 1
                marker = json.loads(reader.get_batch_with_custom_metadata(last)[1][MARKER])
                rows = sum(reader.get_batch(i).num_rows for i in range(last)) if verify else marker["kept_rows"]
                removed = folder / f"{uid}{REMOVED_SUFFIX}"
                unit = FinishedUnit(done, [removed] if os.path.exists(removed) else [], marker)
            else:
                source.seek(0)
                marker = json.loads(source.read())
                legacy = folder / uid
                unit = FinishedUnit(legacy / LEGACY_KEPT_NAME, [f for name in LEGACY_REMOVED_NAMES
                                                               if os.path.exists(f := legacy / name)], marker)
                rows = _rows_in(unit.kept) if verify else marker["kept_rows"]
        return unit if rows == marker["kept_rows"] else None
    except (OSError, ValueError, KeyError, TypeError, IndexError, pa.ArrowException):
        return None


def kept_file(work: Path, phase_index: int, uid: str) -> Path:
    """Where a finished unit's phase keeps its rows: its done file, or an older version's folder (JSON marker)."""
    done = work / f"phase{phase_index}" / f"{uid}{DONE_SUFFIX}"
    with open(done, "rb") as f:
        arrow = f.read(len(ARROW_MAGIC)) == ARROW_MAGIC
    return done if arrow else done.parent / uid / LEGACY_KEPT_NAME


def _is_parquet(path: Path) -> bool:
    """Parquet (an input dataset's shard, an older version's removed rows), else staged Arrow IPC."""
    return path.suffix == ".parquet"


def _rows_in(path: Path) -> int:
    if not _is_parquet(path):
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    return int(pq.read_metadata(path).num_rows)


def _unit_done(work: Path, phase: Phase, uid: str) -> bool:
    return finished_unit(work, phase.index, uid) is not None


def _write_arrow(path: Path, tables: Iterator[pa.Table], schema: pa.Schema, skip_empty: bool = False,
                 marker: Callable[[int], dict[str, Any]] | None = None) -> int:
    """Scratch rows as an Arrow IPC file (uncompressed: read back by memory map, never kept), one record batch per
    table written; a table whose columns came in several chunks records their lengths (`CHUNKS`), so that
    `staged_tables` gives back each table as it was: Parquet pages follow chunk boundaries, and a shard written
    from the staged rows is then the file the rows would have been written to directly. `skip_empty`: no file
    for no rows (an earlier, interrupted attempt's is removed). `marker(rows)`, called once the rows are written
    (and before the file is renamed into place), gives the marker written in an empty last batch (`MARKER`)."""
    rows = 0
    if skip_empty:
        tables = iter(pending := [t for t in tables if t.num_rows])
        if not pending:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return 0
    with scratch_open(path) as f, pa.ipc.new_file(f, schema) as writer:
        for table in tables:
            if table.num_rows:
                table = conform(table, schema)
                meta = None
                if any(column.num_chunks != 1 for column in table.columns):
                    meta = {CHUNKS: json.dumps([[len(c) for c in column.chunks] for column in table.columns]).encode()}
                writer.write_batch(table.combine_chunks().to_batches()[0], custom_metadata=meta)
                rows += table.num_rows
        if marker is not None:
            empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
            writer.write_batch(empty, custom_metadata={MARKER: json.dumps(marker(rows), sort_keys=True).encode()})
    return rows


def _staged_batches(reader: pa.ipc.RecordBatchFileReader) -> Iterator[tuple[pa.RecordBatch, Any]]:
    """(batch, its metadata) of a staged file, but the marker's."""
    for i in range(reader.num_record_batches):
        batch, meta = reader.get_batch_with_custom_metadata(i)
        if meta is None or MARKER not in meta:
            yield batch, meta


def read_staged(path: Path) -> pa.Table:
    """A staged file's rows as written, a chunk per record batch (without the marker's)."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        return pa.Table.from_batches([batch for batch, _ in _staged_batches(reader)], schema=reader.schema)


CHUNKS = b"codefoundry.chunks"
"""A staged record batch's metadata key: the chunk lengths of each column of the table it was written from."""
ROW_GROUP_ROWS = 1 << 20
"""`ParquetWriter.write_table`'s row groups: at most this many rows (pyarrow's default)."""


def staged_tables(path: Path) -> Iterator[pa.Table]:
    """Each table `_write_arrow` wrote to `path`, chunked as it was given."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for batch, meta in _staged_batches(reader):
            if meta is None or CHUNKS not in meta:
                yield pa.Table.from_batches([batch])
                continue
            columns = []
            for column, lengths in zip(batch.columns, json.loads(meta[CHUNKS]), strict=True):
                starts = np.cumsum([0, *lengths]).tolist()
                columns.append(pa.chunked_array([column.slice(a, n) for a, n in zip(starts, lengths, strict=False)],
                                                column.type))
            yield pa.Table.from_arrays(columns, schema=batch.schema)


def read_unit(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A unit's rows (`read_parquet` of a `.parquet` file), chunked as `read_parquet` would give them had they been
    written to Parquet: a chunk per row group (≤ ROW_GROUP_ROWS rows of one written table), cut every
    SCAN_BATCH_ROWS rows."""
    if _is_parquet(path):
        return read_parquet(path, columns)
    parts = []
    for table in staged_tables(path):
        table = table.select(columns) if columns is not None else table
        for group in range(0, table.num_rows, ROW_GROUP_ROWS):
            piece = table.slice(group, ROW_GROUP_ROWS).combine_chunks()
            parts += [piece.slice(start, SCAN_BATCH_ROWS) for start in range(0, piece.num_rows, SCAN_BATCH_ROWS)]
    if parts:
        return pa.concat_tables(parts)
    with pa.memory_map(str(path)) as source:
        empty = pa.ipc.open_file(source).schema.empty_table()
    return empty.select(columns) if columns is not None else empty


@dataclass(frozen=True)
class UnitTask:
    """Everything a worker needs to run one phase of one unit (pickled to the worker)."""

    work: Path
    phase: Phase
    unit_index: int
    unit: WorkUnit
    batch_rows: int
    removed_content: bool = True

    @property
    def uid(self) -> str:
        return f"{self.unit_index:06d}"

    def scratch(self, step: GlobalStep) -> Path:
        return self.work / "global" / step.name

    def batches(self) -> Iterator[pa.Table]:
        """The rows that enter this phase: read from the source (phase 0) or from the staged survivors."""
        if self.phase.index == 0:
            yield from self.unit.read()
            return
        staged = read_staged(kept_file(self.work, self.phase.index - 1, self.uid))
        for start in range(0, staged.num_rows, self.batch_rows):  # fixed-size batches across written chunks
            yield staged.slice(start, self.batch_rows).combine_chunks()

    def run(self) -> str:
        folder = self.work / f"phase{self.phase.index}"
        removed: list[pa.Table] = []
        steps = self.phase.steps
        entry, exit_ = self.phase.entry, self.phase.exit
        uid = self.uid
        entry_scratch = self.scratch(entry) if entry is not None else None  # once, not per batch
        exit_scratch = self.scratch(exit_) if exit_ is not None else None
        if entry is not None:
            start = time.perf_counter()
            entry.load(entry_scratch)
            entry.stats.seconds += time.perf_counter() - start
        if exit_scratch is not None:
            shutil.rmtree(UnitContext(uid, self.unit_index, exit_scratch).map_dir, ignore_errors=True)
        offsets = {"in": 0, "out": 0}

        def survivors() -> Iterator[pa.Table]:
            for batch in self.batches():
                if self.phase.index == 0 and batch.num_rows:
                    if batch.column(REASON).null_count < batch.num_rows:  # else no copy: most read batches have
                        bad = pc.is_valid(batch.column(REASON))          # no bad row
                        removed.append(batch.filter(bad))
                        batch = batch.filter(pc.invert(bad))
                    batch = batch.drop_columns([REASON])
                if entry is not None:
                    ctx = UnitContext(uid, self.unit_index, entry_scratch, offsets["in"])
                    offsets["in"] += batch.num_rows
                    batch, dropped = entry.process_unit(batch, ctx)
                    if dropped.num_rows:
                        removed.append(dropped)
                batch, dropped_list = run_steps(batch, steps)
                removed.extend(dropped_list)
                if exit_ is not None and batch.num_rows:
                    ctx = UnitContext(uid, self.unit_index, exit_scratch, offsets["out"])
                    offsets["out"] += batch.num_rows
                    exit_.timed_map(batch, ctx)
                yield batch

        def finish(kept_rows: int) -> dict[str, Any]:
            """Once the kept rows are written: the removed rows' file, then the marker (with the unit's step stats),
            which ends the kept rows' file: one scratch file per unit and phase (two when rows were removed)."""
            nonlocal removed
            if not self.removed_content:
                removed = [t.set_column(t.schema.get_field_index("content"), "content",
                                        pa.nulls(t.num_rows, pa.string())) for t in removed]
            _write_arrow(folder / f"{uid}{REMOVED_SUFFIX}", iter(removed), REMOVED_SCHEMA, skip_empty=True)
            # The exit step counts no rows here, only its map's time; its rows come in the next phase.
            step_stats = {s.name: s.take_stats().to_json() for s in ([entry] if entry else []) + steps
                          + ([exit_] if exit_ else [])}
            return {"kept_rows": kept_rows, "steps": step_stats}

        _write_arrow(folder / f"{uid}{DONE_SUFFIX}", survivors(), FILES_SCHEMA, marker=finish)
        return uid


def _run_task(task: UnitTask) -> str:
    return task.run()


def _reduce_done(scratch: Path, partition: int) -> bool:
    try:
        return "seconds" in json.loads((scratch / "reduce" / f"{partition}.done").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _run_reduce(step: GlobalStep, partition: int, scratch: Path) -> int:
    start = time.perf_counter()
    step.reduce(partition, scratch)
    _write_scratch_json(scratch / "reduce" / f"{partition}.done", {"seconds": time.perf_counter() - start})
    return partition


def _ignore_sigint() -> None:
    """In a worker: Ctrl-C is the driver's to handle (a worker interrupted mid-task can wedge the pool's queues)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """Runs units in `workers` processes (1 = in this process) with a progress bar."""

    def __init__(self, workers: int | None = None, batch_rows: int = 2048, removed_content: bool = True) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.batch_rows = batch_rows
        self.removed_content = removed_content

    def connect(self) -> None:
        """Check that the executor can run tasks, before a run writes anything (local processes always can)."""

    def _pool_map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]], description: str) -> None:
        if not calls:
            return
        with progress_bar() as progress:
            task = progress.add_task(description, total=len(calls))
            if self.workers == 1 or len(calls) == 1:
                for args in calls:
                    fn(*args)
                    progress.advance(task)
                return
            # Workers fork before the progress bar's refresh thread draws anything.
            with ProcessPoolExecutor(min(self.workers, len(calls)), mp_context=get_context("fork"),
                                     initializer=_ignore_sigint) as pool:
                futures: set[Future[Any]] = {pool.submit(fn, *args) for args in calls}
                try:
                    while futures:
                        done, futures = wait(futures, return_when=FIRST_EXCEPTION)
                        for fut in done:
                            fut.result()  # re-raise a worker's exception here
                            progress.advance(task)
                except BaseException:
                    # Ctrl-C or a failed unit: the running units finish, the queued ones are not started (the
                    # pool's exit would run them all first); a rerun resumes from the units that finished
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise

    def run(self, work: Path, units: Sequence[WorkUnit], steps: Sequence[Step]) -> list[Phase]:
        """Run every phase of every unit under `work` (skipping what is already done)."""
        clean_temp_files(work)
        plan = phases(steps)
        for phase in plan:
            if phase.entry is not None:
                scratch = work / "global" / phase.entry.name
                todo = [(phase.entry, p, scratch) for p in range(phase.entry.num_partitions)
                        if not _reduce_done(scratch, p)]
                self._pool_map(_run_reduce, todo, f"{phase.entry.name}: reduce")
            tasks = [UnitTask(work, phase, i, unit, self.batch_rows, self.removed_content)
                     for i, unit in enumerate(units)]
            todo_tasks = [(t,) for t in tasks if not _unit_done(work, phase, t.uid)]
            label = "read + " + ", ".join(s.name for s in phase.steps) if phase.index == 0 else \
                ", ".join(s.name for s in ([phase.entry] if phase.entry else []) + phase.steps)
            self._pool_map(_run_task, todo_tasks, f"phase {phase.index} ({label})")
        return plan


def unit_outputs(work: Path, plan: list[Phase], n_units: int) -> Iterator[tuple[Path, list[Path], dict[str, Any]]]:
    """Per unit in plan order: (final kept file, removed files of every phase, merged step stats)."""
    for i in range(n_units):
        uid = f"{i:06d}"
        removed: list[Path] = []
        steps: dict[str, Any] = {}
        for p in plan:
            unit = finished_unit(work, p.index, uid, verify=False)  # the run checked or wrote it
            if unit is None:
                raise RuntimeError(f"unit {uid} of phase {p.index} is not finished")
            kept = unit.kept
            removed += unit.removed
            for name, data in unit.marker["steps"].items():
                if name not in steps and data.keys() == STEP_KEYS:  # as `to_json` wrote it: nothing to merge
                    steps[name] = data
                    continue
                stats = StepStats.from_json(data)
                if name in steps:
                    stats.merge(StepStats.from_json(steps[name]))
                steps[name] = stats.to_json()
        yield kept, removed, steps


STEP_KEYS = StepStats().to_json().keys()


def step_seconds(work: Path, plan: list[Phase], outputs: Sequence[tuple[Path, list[Path], dict[str, Any]]]
                 ) -> dict[str, float]:
    """Wall time per step summed over units and a global step's reduce partitions (steps in run order)."""
    seconds: dict[str, float] = {}
    for _, _, steps in outputs:
        for name, data in steps.items():
            seconds[name] = seconds.get(name, 0.0) + data.get("seconds", 0.0)
    for phase in plan:
        if phase.exit is not None:
            for marker in sorted((work / "global" / phase.exit.name / "reduce").glob("*.done")):
                text = marker.read_text(encoding="utf-8")
                seconds[phase.exit.name] = seconds.get(phase.exit.name, 0.0) + (
                    json.loads(text).get("seconds", 0.0) if text.strip() else 0.0)
    return seconds


SHARD_FORMAT = 2
"""The shards' layout, in the manifest: 2 = row groups cut by the rows' sizes (1: a row group per staged batch).
Any Parquet reader reads both."""
SHARD_GROUP_BYTES = 32 << 20
"""A shard's row groups hold rows until their `size`s would pass this many bytes …"""
SHARD_GROUP_ROWS = 1 << 16
"""… or this many rows."""


def write_shards(files: Sequence[Path], out_dir: Path, schema: pa.Schema, max_bytes: int,
                 transform: Callable[[pa.Table], pa.Table] | None = None, prefix: str = "train") -> list[Path]:
    """Concatenate `files` in order into `prefix-0000i-of-0000n.parquet` shards of ≤ `max_bytes` file bytes each.

    Shard boundaries, and each shard's row groups (SHARD_GROUP_BYTES, SHARD_GROUP_ROWS), depend only on the rows'
    `size`s, so the same rows give the same shards however units and batches cut them. (Shards before this layout
    had a row group per staged batch: hundreds of small ones, each ~1 ms to encode, in files 6 % to 7x bigger.)
    A shard that is exactly one `.parquet` input file (a verb's unchanged shard) is linked to it.
    """
    sizes = [_unit_table(f, ["size"]).column("size").to_pylist() for f in files]
    boundaries: list[int] = []  # global row index where each shard after the first starts
    groups: list[int] = []  # … where each row group that does not open a shard starts
    acc = group_bytes = group_rows = row = 0
    for per_file in sizes:
        for size in per_file:
            size = size or 0
            if acc and acc + size > max_bytes:
                boundaries.append(row)
                acc = group_bytes = group_rows = 0
            elif group_rows and (group_bytes + size > SHARD_GROUP_BYTES or group_rows == SHARD_GROUP_ROWS):
                groups.append(row)
                group_bytes = group_rows = 0
            acc += size
            group_bytes += size
            group_rows += 1
            row += 1
    n_shards = len(boundaries) + 1
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    paths = [out_dir / f"{prefix}-{k:05d}-of-{n_shards:05d}.parquet" for k in range(n_shards)]
    starts = np.cumsum([0, *[len(x) for x in sizes]]).tolist()
    cache: dict[str, Any] = {}  # the last file read: a file spanning row groups or shards is read once

    def rows(lo: int, hi: int) -> pa.Table:
        """Rows [lo, hi) of the concatenated files, transformed, in one chunk per column."""
        pieces = []
        for i in range(bisect.bisect_right(starts, lo) - 1, len(files)):
            f, a, b = files[i], max(lo, starts[i]), min(hi, starts[i + 1])
            if starts[i] >= hi:
                break
            if a < b:
                if cache.get("path") != f:
                    cache.update(path=f, table=_unit_table(f))
                table = conform(cache["table"].slice(a - starts[i], b - a), schema)
                pieces.append(transform(table) if transform else table)
        return pa.concat_tables(pieces).combine_chunks()

    for k, path in enumerate(paths):
        start = boundaries[k - 1] if k else 0
        stop = boundaries[k] if k < len(boundaries) else row
        whole = [i for i in range(len(files)) if starts[i] == start and starts[i + 1] == stop and stop > start]
        if whole and transform is None and _is_parquet(files[whole[0]]):  # exactly one input shard: a link
            os.link(files[whole[0]], path)
            _fsync(path)  # scratch files are written without fsync; the dataset's are durable
            continue
        cuts = [start, *groups[bisect.bisect_right(groups, start):bisect.bisect_left(groups, stop)], stop]
        _write_parquet(path, (rows(lo, hi) for lo, hi in itertools.pairwise(cuts) if lo < hi), schema)
    return paths


def _unit_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A unit's (or an input shard's) rows, as stored: staged Arrow memory-mapped, Parquet decoded."""
    if _is_parquet(path):
        return read_parquet(path, columns)
    table = read_staged(path)
    return table.select(columns) if columns is not None else table


DELETE_THREADS = 16
"""Unlinks in flight when removing `.work`: on a disk that discards freed blocks each unlink waits ~5 ms for the
device, and concurrent ones overlap (16 threads: ~10x faster than one by one here)."""


def remove_tree(root: Path, threads: int = DELETE_THREADS) -> None:
    """`shutil.rmtree(root)` with the files, then each level of folders, removed by concurrent threads."""
    if not root.exists():
        return
    files: list[str] = []
    levels: dict[int, list[str]] = {}
    for folder, dirs, names in os.walk(root):
        files.extend(os.path.join(folder, n) for n in names)
        files.extend(os.path.join(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d)))
        levels.setdefault(folder.count(os.sep), []).append(folder)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_unlink, files))
        for depth in sorted(levels, reverse=True):
            list(pool.map(_rmdir, levels[depth]))
    shutil.rmtree(root, ignore_errors=True)  # anything a concurrent writer added meanwhile


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _rmdir(path: str) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, OSError):
        os.rmdir(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STATS_ROWS = 1 << 20
"""Rows of stats columns counted at once (a few small columns: bounded memory, few calls)."""


def gather_stats(outputs: Sequence[tuple[Path, list[Path], dict[str, Any]]], subset: str) -> dict[str, Any]:
    """Merged stats.json tree over every unit's kept and removed rows: counted over units taken together (every
    leaf is a sum, so this is the merge of each unit's tree; counting unit by unit cost ~2 ms a unit)."""
    trees = []
    columns = ["size", "lang", "licenses", "license_type"]
    kept: list[pa.Table] = []
    removed: list[pa.Table] = []
    steps: dict[str, Any] = {}
    rows = 0

    def count() -> None:
        kept_t = pa.concat_tables(kept).combine_chunks()
        removed_t = pa.concat_tables(removed).combine_chunks()
        trees.append(count_files(kept_t, removed_t, steps, subset))
        kept.clear()
        removed.clear()
        steps.clear()

    for kept_file, removed_files, unit_steps in outputs:
        kept.append(_unit_table(kept_file, columns))  # as stored: counts do not depend on how rows are chunked
        unit_removed = [_unit_table(f, [*columns, REASON]) for f in removed_files]
        removed += unit_removed or [REMOVED_SCHEMA.empty_table().select([*columns, REASON])]
        steps.update(merge(steps, {name: {k: v for k, v in data.items() if k != "seconds"}
                                   for name, data in unit_steps.items()}))
        rows += kept[-1].num_rows + sum(t.num_rows for t in unit_removed)
        if rows >= STATS_ROWS:
            count()
            rows = 0
    if kept:
        count()
    return merge_all(trees)
