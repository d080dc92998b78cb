"""Run a global step over in-memory tables (one table per work unit): the executor's phases, without a dataset.

For tests, benchmarks and library users who hold their rows in memory; `codefoundry data
curate` runs the same step through its executor instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa

from codefoundry.data.pipeline import GlobalStep, StepResult, UnitContext


def _map(step: GlobalStep, table: pa.Table, ctx: UnitContext) -> None:
    step.map(table, ctx)


def _reduce(step: GlobalStep, partition: int, scratch: Path) -> None:
    step.reduce(partition, scratch)


def run_global_step(step: GlobalStep, units: Sequence[pa.Table], scratch: str | Path,
                    workers: int = 1) -> list[StepResult]:
    """map every unit → reduce every partition → load → filter every unit; (kept, removed) per unit."""
    scratch = Path(scratch)
    contexts = [UnitContext(f"{i:06d}", i, scratch) for i in range(len(units))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(units)))
    if workers == 1:
        for table, ctx in zip(units, contexts, strict=True):
            step.map(table, ctx)
        for p in range(step.num_partitions):
            step.reduce(p, scratch)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            list(pool.map(_map, [step] * len(units), units, contexts))
            list(pool.map(_reduce, [step] * step.num_partitions, range(step.num_partitions),
                          [scratch] * step.num_partitions))
    step.load(scratch)
    return [step.process_unit(table, ctx) for table, ctx in zip(units, contexts, strict=True)]
