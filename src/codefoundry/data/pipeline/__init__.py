"""The curation pipeline: records, steps, executors. The contract every data step follows.

Records
    A batch is a `pyarrow.Table` with `FILES_SCHEMA` (The Stack's per-file columns: hexsha,
    size, ext, lang, repo_name, path, licenses, license_type, stars, forks, content,
    avg_line_length, max_line_length, alphanum_fraction). Removed rows have the same columns
    plus `reason`, a stable slug "<step>:<detail>" such as "basic:max_line_length",
    "license:gpl-3.0", "vendored", "read:binary". Rows never leave the schema between steps.

Steps (`step.py`)
    - `Filter`: implement `keep(record) -> None | "reason"` (~20 lines; set `columns` to read
      only what you need) or the vectorized `reasons(batch) -> [None | "reason", …]`.
    - `Mapper`: implement `transform(batch) -> batch` (same rows, rewritten: PII redaction).
    - `GlobalStep` (dedup, anything needing all data): three phases the executor runs
        map(batch, ctx)          per unit: write partition files under ctx.map_dir
        reduce(partition, dir)   per partition, once all units are mapped
        filter(batch, ctx)       per unit, on the rows staged at map time, after load(dir)
      `ctx.row_ids(n)` gives stable int64 ids (unit_index << 32 | row offset), identical in the
      map and filter phases, so a reduce can name the rows to drop.
    The base class counts rows in / kept / removed by reason (`step.stats`) and
    `self.stat_update("key")` counts anything else; executors collect these per unit into
    `stats.json` under `subsets.files.steps.<step.name>`. Give each step a unique `name`.
    Steps must pickle (plain attributes; heavy resources built in `setup()`, which runs
    lazily in whatever process runs the step): the local executor forks workers, the Ray
    executor (`ray_executor.py`) ships the same objects to Ray workers.
    Config: each step takes its settings (a pydantic model or plain values) in `__init__`
    with defaults that cite their source; `codefoundry.data.steps.build_steps(config)` turns
    the stage config into the step list: a new step adds its config section and its place there.

    The same steps work on a user's own `datasets.Dataset`:
        ds.filter(step.keep_mask, batched=True)   # Filter
        ds.map(step.annotate, batched=True)       # Filter → adds a `reason` column
        ds.map(step.map_batch, batched=True)      # Mapper

Executors (`executor.py`)
    Work units (`WorkUnit`: `describe()`, `read() -> batches`) are independent slices of
    the input (one repository, one chunk of a table). `LocalExecutor(workers).run(work, units,
    steps)` cuts the step list into phases at global steps, runs each unit's phase in a
    worker, writes `.work/phase<i>/<unit>.kept.arrow` (+ `<unit>.removed.arrow` when rows
    left) and then a `.done` marker holding the unit's step stats; a rerun skips marked units,
    so a run killed at any point resumes and ends with identical bytes. Inputs and `--out` may
    be fsspec URLs (`storage.py`: a remote dataset is staged locally, then published).
    Finalizing (`codefoundry.data.finalize`) gathers units in plan order into bounded shards
    `data/<subset>/train-*.parquet` and `removed/<subset>/…`, merges stats (`stats.py`, schema
    documented there: per subset, language, license, license type, reason, step), renders
    `card.md` from stats.json (every step's removals appear in its tables automatically) and
    writes `manifest.json`.
    `RayExecutor(workers, …, address)` (`ray_executor.py`) runs the same unit tasks, reduce
    partitions and markers as Ray tasks: same bytes, and either executor resumes the other's run.
"""

from codefoundry.data.pipeline.executor import LocalExecutor, Phase, WorkUnit, phases
from codefoundry.data.pipeline.ray_executor import RayExecutor
from codefoundry.data.pipeline.schema import COLUMNS, FILES_SCHEMA, REASON, REMOVED_SCHEMA, conform, from_records
from codefoundry.data.pipeline.stats import count_files, merge, merge_all
from codefoundry.data.pipeline.step import (
    Filter,
    GlobalStep,
    Mapper,
    Step,
    StepResult,
    StepStats,
    UnitContext,
    run_steps,
    split,
)

__all__ = [
    "COLUMNS",
    "FILES_SCHEMA",
    "REASON",
    "REMOVED_SCHEMA",
    "Filter",
    "GlobalStep",
    "LocalExecutor",
    "Mapper",
    "Phase",
    "RayExecutor",
    "Step",
    "StepResult",
    "StepStats",
    "UnitContext",
    "WorkUnit",
    "conform",
    "count_files",
    "from_records",
    "merge",
    "merge_all",
    "phases",
    "run_steps",
    "split",
]
