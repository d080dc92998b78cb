"""How a dataset is made, whoever makes it: `data curate` and every dataset verb end here.

    dataset/
      data/files/train-0000i-of-0000n.parquet     kept rows (FILES_SCHEMA), ≤ shard_max_bytes each
      removed/files/train-0000i-of-0000n.parquet  removed rows + `reason` (content only with removed_content,
                                                  never for an opted-out repository)
      data/<subset>/…, removed/<subset>/…         the same for notebooks, commits, issues (subsets/), each
                                                  written when the run saw any of its rows
      stats.json                                  counts (schema: pipeline/stats.py)
      card.md, README.md                          dataset card (same text); its `configs:` front matter lets
                                                  datasets.load_dataset(DIR, "files") work (datasets reads README.md)
      index/                                      search.sqlite (`data search`), contains.bloom.npy (`data contains`)
      manifest.json                               command, config, versions, sources, steps, wall time per
                                                  step (`step_seconds`: the one thing that differs between
                                                  runs, so stats.json and the card leave it out); written last

A `Job` says what goes in (work units, and for a verb the finished dataset it starts from),
through which steps, with which settings. `make_dataset(job)` guards the output directory by
the job's run key (the same job resumes, another one is refused), runs the local executor and
`finalize`s: shards, stats, card and README, indexes, manifest, in that order, then removes
`.work`. The other subsets are `parts` of the job: the executor runs each in `.work/subsets/<key>/`
and finalize writes them beside files, through the same code. A verb's dataset carries its
input's removed rows and step stats over and records the input's manifest hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table

from codefoundry.atomic import atomic_write_json, atomic_write_text
from codefoundry.console import console
from codefoundry.data.card import render_card
from codefoundry.data.config import CurateConfig, make_executor
from codefoundry.data.contains import ContainsIndexWriter
from codefoundry.data.decontam import Decontaminate
from codefoundry.data.optout import OptOut, forget
from codefoundry.data.pipeline import (
    FILES_SCHEMA,
    REMOVED_SCHEMA,
    LocalExecutor,
    Phase,
    Step,
    WorkUnit,
    count_files,
    storage,
)
from codefoundry.data.pipeline.executor import (
    SHARD_FORMAT,
    WORK,
    _rows_in,
    gather_stats,
    read_unit,
    remove_tree,
    staged_tables,
    step_seconds,
    unit_outputs,
    write_shards,
)
from codefoundry.data.pipeline.stats import merge_all
from codefoundry.data.search import COLUMNS, SearchIndexWriter, subset_shards
from codefoundry.data.steps import decontaminated_against
from codefoundry.data.subsets.part import SUBSETS, Part
from codefoundry.errors import UserError
from codefoundry.manifest import MANIFEST_NAME, Manifest, manifest_sha256, read_manifest, write_manifest

SUBSET = "files"
RUN_INDEPENDENT = {"workers", "executor", "ray_address"}
"""Settings that change where a run's units execute, never its bytes: a run resumes across them."""
STAT_COLUMNS = ["size", "lang", "licenses", "license_type", "reason"]


@dataclass(frozen=True)
class Job:
    """One run that makes a dataset: its input, steps, settings and where it goes."""

    out: Path
    units: Sequence[WorkUnit]
    steps: list[Step]
    config: CurateConfig
    sources: list[str]
    """What the rows came from (curate's SOURCE arguments; a verb keeps its input's)."""
    base: Path | None = None
    """The finished dataset a verb starts from: its removed rows and step stats carry over."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """More manifest fields (e.g. the opt-out list's sha256)."""
    parts: Sequence[Part] = ()
    """The other subsets' units and steps (notebooks, commits, issues)."""
    url: str | None = None
    """An fsspec URL (`s3://…`, `memory://…`) the finished dataset is published to; `out` is then the local
    staging directory it is made in (`pipeline/storage.py`)."""

    def run_key(self) -> str:
        """What makes two runs the same run: config (less where it runs), sources, units, steps, input dataset."""
        blob = json.dumps({"config": self.config.model_dump(mode="json", exclude=RUN_INDEPENDENT),
                           "sources": self.sources, "units": [u.describe() for u in self.units],
                           "steps": [s.name for s in self.steps],
                           "base": manifest_sha256(self.base) if self.base else None,
                           **({"parts": [p.describe() for p in self.parts]} if self.parts else {})}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def base_manifest(self) -> Manifest | None:
        return read_manifest(self.base, kind="dataset") if self.base else None


LOCK = "lock"  # in WORK: held by the run writing this --out


def prepare(out: Path, key: str, overwrite: bool) -> bool:
    """Make `out` ready for the run `key`; True if it already holds that run's finished dataset."""
    work = out / WORK
    if overwrite and out.exists():  # all but the run lock the caller holds
        for child in [*(c for c in out.iterdir() if c != work), *(c for c in work.iterdir() if c.name != LOCK)]:
            if child.is_dir() and not child.is_symlink():
                remove_tree(child)
            else:
                child.unlink()
    if (out / MANIFEST_NAME).exists():  # written last: its presence means a finished run
        manifest = read_manifest(out)
        if manifest.kind == "dataset" and manifest.extra.get("run_key") == key:
            remove_tree(work)
            return True
        raise UserError(f"{out} already holds a {manifest.kind} artifact made with other settings",
                        "choose another --out, or pass --overwrite to replace it")
    plan = work / "plan.json"
    if plan.exists():
        previous = json.loads(plan.read_text(encoding="utf-8")).get("run_key")
        if previous != key:
            raise UserError(f"{out} holds an unfinished run with other sources or settings",
                            "rerun with the same ones to resume, or pass --overwrite to start over")
    elif out.exists() and any(p.name != WORK for p in out.iterdir()):
        raise UserError(f"{out} is not empty and is not a dataset from this command",
                        "choose an empty or new --out, or pass --overwrite to replace it")
    work.mkdir(parents=True, exist_ok=True)
    return False


def _prepare_remote(job: Job, key: str, overwrite: bool) -> bool:
    """`prepare` for a dataset published to `job.url`: True if the URL already holds this run's dataset."""
    url = job.url or ""
    if overwrite:
        storage.remove_remote(url)
        storage.clear_staging(job.out)
    text = storage.remote_manifest(url)
    if text is not None:
        manifest = json.loads(text)
        if manifest.get("kind") == "dataset" and manifest.get("extra", {}).get("run_key") == key:
            storage.clear_staging(job.out)
            return True
        raise UserError(f"{url} already holds a {manifest.get('kind')} artifact made with other settings",
                        "choose another --out, or pass --overwrite to replace it")
    if not job.out.exists() and not storage.remote_is_empty(url):
        raise UserError(f"{url} is not empty and is not a dataset from this command",
                        "choose an empty or new --out, or pass --overwrite to replace it")
    return False


def make_dataset(job: Job, overwrite: bool = False) -> Path | str:
    """Run `job` into `job.out` (resuming an interrupted run of the same job) and finalize the dataset;
    with `job.url`, publish it there (returns the URL)."""
    key = job.run_key()
    executor = make_executor(job.config)  # first: a missing Ray is an error before anything is written
    executor.connect()  # and so is a cluster that cannot be joined
    if job.url is not None:
        if _prepare_remote(job, key, overwrite):
            console.print(f"{job.url}: already complete ({len(job.units)} work units)", highlight=False)
            return job.url
        staged = job.out / MANIFEST_NAME
        if staged.exists() and read_manifest(job.out).extra.get("run_key") != key:
            storage.clear_staging(job.out)  # another run's finished copy never goes to this URL
        if not staged.exists():  # this run's finished staging copy (an upload failed) is published as it is
            _run(job, key, executor, overwrite=False)
        files = storage.publish(job.out, job.url)
        storage.clear_staging(job.out)
        console.print(f"{job.url}: published {files} files", highlight=False)
        return job.url
    _run(job, key, executor, overwrite)
    return job.out


def _run(job: Job, key: str, executor: LocalExecutor, overwrite: bool) -> None:
    work = job.out / WORK
    fresh = not work.exists()
    work.mkdir(parents=True, exist_ok=True)  # the lock lives here and is taken before --overwrite clears anything
    with _sole_run(job.out, work / LOCK):
        try:
            done = prepare(job.out, key, overwrite)
        except UserError:
            if fresh:  # a folder we refuse keeps nothing of ours
                remove_tree(work)
            raise
        if done:
            console.print(f"{job.out}: already complete ({len(job.units)} work units)", highlight=False)
            return
        atomic_write_json(work / "plan.json", {"run_key": key, "sources": job.sources,
                                               "units": [u.describe() for u in job.units]})
        start = time.perf_counter()
        plan = executor.run(work, job.units, job.steps)
        part_plans = [executor.run(part_work(work, p), p.units, p.steps) for p in job.parts]
        finalize(job, key, plan, time.perf_counter() - start, part_plans)


@contextlib.contextmanager
def _sole_run(out: Path, lock: Path) -> Iterator[None]:
    """Hold `lock` for the run: a second run on the same --out (which would clear the first one's temporary
    files as its own leftovers) stops with an error instead. The kernel drops the lock with the process."""
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another run is writing {out}", "wait for it to finish, or choose another --out") from None
        yield


def part_work(work: Path, part: Part) -> Path:
    """Where the executor runs a part (files run in `.work` itself)."""
    return work / "subsets" / part.key


def finalize(job: Job, key: str, plan: list[Phase], seconds: float,
             part_plans: Sequence[list[Phase]] = ()) -> dict[str, Any]:
    """Shards, stats, card and README, indexes, manifest (last) from a finished executor run; returns stats."""
    out, config = job.out, job.config
    work = out / WORK
    outputs = list(unit_outputs(work, plan, len(job.units)))
    new_removed = [f for o in outputs for f in o[1]]
    subset_outputs: dict[str, list[tuple[Path, list[Path], dict[str, Any]]]] = {SUBSET: outputs}
    for part, part_plan in zip(job.parts, part_plans, strict=True):
        found = list(unit_outputs(part_work(work, part), part_plan, len(part.units)))
        subset_outputs.setdefault(part.subset, []).extend(found)
        new_removed += [f for o in found for f in o[1]]
    trees, written = [], []
    for subset in sorted(subset_outputs, key=SUBSETS.index):
        tree = _write_subset(job, subset, subset_outputs[subset])
        if subset == SUBSET or tree["subsets"][subset]["totals"].get("files", 0):
            trees.append(tree)
            written.append(subset)
        else:  # a subset nothing was found for stays out of the dataset
            shutil.rmtree(out / "data" / subset, ignore_errors=True)
            shutil.rmtree(out / "removed" / subset, ignore_errors=True)
    stats = merge_all(trees)
    atomic_write_json(out / "stats.json", stats)
    card = render_card(stats, config, job.sources)
    atomic_write_text(out / "card.md", card)
    atomic_write_text(out / "README.md", card)  # the name `datasets` and the Hub read the card (configs:) from
    if config.inspection_indexes:
        build_indexes(out, {subset: [o[0] for o in subset_outputs[subset]] for subset in written})
    # a verb reports the rows this run removed (a footer read per file, before `.work` goes)
    removed_now = sum(_rows_in(f) for f in new_removed if f.exists()) if job.base else 0
    timings = step_seconds(work, plan, outputs)
    for part, part_plan in zip(job.parts, part_plans, strict=True):
        found = list(unit_outputs(part_work(work, part), part_plan, len(part.units)))
        timings |= {f"{part.key}/{n}": t for n, t in step_seconds(part_work(work, part), part_plan, found).items()}
    write_manifest(out, "dataset", config, inputs={"dataset": job.base} if job.base else None,
                   extra=_manifest_extra(job, key, seconds, timings, written))
    remove_tree(work)
    totals = stats["subsets"][SUBSET]["totals"]
    if job.base:
        by = f"{', '.join(s.name for s in job.steps) or 'no step'} removed {removed_now:,} more"
    else:
        by = f"{totals['removed_files']:,} removed"
    console.print(f"{out}: kept {totals['kept_files']:,} of {totals['files']:,} files "
                  f"({totals['kept_bytes'] / 1e6:.1f} of {totals['bytes'] / 1e6:.1f} MB); {by}", highlight=False)
    for subset in written[1:]:
        t = stats["subsets"][subset]["totals"]
        console.print(f"  {subset}: kept {t['kept_files']:,} of {t['files']:,} rows ({t['kept_bytes'] / 1e6:.1f} MB)",
                      highlight=False)
    console.print(time_table(stats["subsets"][SUBSET].get("steps", {}), timings, [s.name for s in job.steps],
                             seconds))
    return stats


def build_indexes(dataset: Path, kept: Mapping[str, Sequence[Path]] | None = None, batch_rows: int = 2048) -> None:
    """The search and membership indexes (`build_search_index`, `build_contains_index`) from one read of the kept
    rows: `kept`, each subset's staged unit files that its shards were written from (in shard order, so the rows
    come in the shards' order, memory-mapped instead of decoded from Parquet), else the shards themselves."""
    search = SearchIndexWriter(dataset)
    try:
        members = ContainsIndexWriter(dataset)
    except BaseException:
        search.abort()
        raise
    try:
        for subset, tables in _kept_tables(dataset, kept, batch_rows):
            for table in tables:
                search.add(table, subset)
                members.add(table.column("content"))
        search.close()
    except BaseException:
        search.abort()
        members.abort()
        raise
    members.close()


def _kept_tables(dataset: Path, kept: Mapping[str, Sequence[Path]] | None, batch_rows: int
                 ) -> Iterator[tuple[str, Iterator[pa.Table | pa.RecordBatch]]]:
    """(subset, its kept rows' COLUMNS in batches) in `subset_shards`' order: files first, then by name."""
    if kept is None:
        for shard in subset_shards(dataset):
            yield shard.parent.name, pq.ParquetFile(shard).iter_batches(batch_size=batch_rows, columns=COLUMNS)
        return
    for subset in sorted(kept, key=lambda s: (s != SUBSET, s)):
        yield subset, (table.slice(start, batch_rows) for f in kept[subset] for table in _unit_tables(f)
                       for start in range(0, table.num_rows, batch_rows))


def _unit_tables(path: Path) -> Iterator[pa.Table]:
    """A staged unit file's COLUMNS as staged (memory-mapped, no copy: `read_unit` combines chunks as Parquet
    row groups would hold them, which the indexes do not need); an older `.work`'s Parquet unit through it."""
    if path.suffix != ".arrow":
        yield read_unit(path, COLUMNS)
        return
    for table in staged_tables(path):
        yield table.select(COLUMNS)


def time_table(counts: Mapping[str, Any], timings: Mapping[str, float], order: Sequence[str],
               wall: float) -> Table:
    """Where the run spent its time: each step's rows in and out and wall time (summed over workers)."""
    table = Table("step", "rows in", "rows out", "seconds", "share", title="steps (wall time summed over workers)",
                  title_justify="left")
    total = sum(timings.values())
    for name in order:
        c = counts.get(name, {})
        t = timings.get(name, 0.0)
        table.add_row(name, f"{c.get('rows_in', 0):,}", f"{c.get('kept', 0):,}", f"{t:.2f}",
                      f"{100 * t / total:.0f}%" if total else "-")
    table.caption = f"run wall time {wall:.1f} s (reading sources and writing shards are not in any step)"
    return table


def _removed_rows(job: Job) -> Callable[[pa.Table], pa.Table] | None:
    """What removed rows go through on their way into removed/: text dropped unless kept, and always for
    opted-out repositories (theirs from the input dataset included). None when the executor did it all."""
    opt_outs = [s.entries for s in job.steps if isinstance(s, OptOut)]
    keep_text = job.config.removed_content
    if job.base is None and not (opt_outs and keep_text):
        return None

    def transform(table: pa.Table) -> pa.Table:
        if not keep_text:
            return table.set_column(table.schema.get_field_index("content"), "content",
                                    pa.nulls(table.num_rows, pa.string()))
        for entries in opt_outs:
            table = forget(table, entries)
        return table

    return transform


def _write_subset(job: Job, subset: str, outputs: list[tuple[Path, list[Path], dict[str, Any]]]
                  ) -> dict[str, Any]:
    """One subset's kept and removed shards; returns its stats tree."""
    out, config = job.out, job.config
    base_removed = sorted((job.base / "removed" / subset).glob("*.parquet")) if job.base else []
    write_shards([o[0] for o in outputs], out / "data" / subset, FILES_SCHEMA, config.shard_max_bytes)
    write_shards(base_removed + [f for o in outputs for f in o[1]], out / "removed" / subset, REMOVED_SCHEMA,
                 config.shard_max_bytes, transform=_removed_rows(job))
    return _stats(job, outputs, base_removed, subset)


def _stats(job: Job, outputs: list[tuple[Path, list[Path], dict[str, Any]]], base_removed: list[Path],
           subset: str = SUBSET) -> dict[str, Any]:
    """stats.json: this run's units, plus the input dataset's removed rows and step stats for a verb."""
    stats = gather_stats(outputs, subset)
    if not outputs:  # no unit: an empty subset tree
        stats = count_files(FILES_SCHEMA.empty_table(), REMOVED_SCHEMA.empty_table(), subset=subset)
    if job.base is None:
        return stats
    carried = [count_files(FILES_SCHEMA.empty_table(), pq.ParquetFile(f).read(columns=STAT_COLUMNS), subset=subset)
               for f in base_removed]
    merged = merge_all([stats, *carried])
    base_stats = json.loads((job.base / "stats.json").read_text(encoding="utf-8"))["subsets"]
    previous = base_stats.get(subset, {}).get("steps", {})
    merged["subsets"][subset]["steps"] = {**previous, **stats["subsets"][subset].get("steps", {})}
    return merged


def _manifest_extra(job: Job, key: str, seconds: float, timings: Mapping[str, float],
                    subsets: Sequence[str] = (SUBSET,)) -> dict[str, Any]:
    base = job.base_manifest()
    previous = dict(base.extra) if base else {}
    benchmarks = set(previous.get("decontaminated_against") or [])
    if any(isinstance(s, Decontaminate) for s in job.steps):
        benchmarks |= set(decontaminated_against(job.config))
    return {**previous, "run_key": key, "sources": job.sources, "work_units": len(job.units),
            "steps": [*previous.get("steps", []), *(s.name for s in job.steps)], "subsets": list(subsets),
            "seconds": round(seconds, 3), "step_seconds": {n: round(t, 6) for n, t in timings.items()},
            "shard_format": SHARD_FORMAT,
            "decontaminated_against": sorted(benchmarks), **_opt_out_hash(job), **job.extra}


def _opt_out_hash(job: Job) -> dict[str, str]:
    """The opt-out list's sha256 when this run applied one (what the lineage of models trained on it shows)."""
    lists = [s.entries for s in job.steps if isinstance(s, OptOut) and len(s.entries)]
    return {"opt_out_sha256": lists[-1].sha256} if lists else {}
