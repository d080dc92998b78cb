"""Run curation steps on a finished dataset, writing a new one: `data dedup`, `data decontaminate`,
`data redact-pii`, `data opt-out`.

The dataset's `data/files` shards become the work units of the same local executor curate uses
(resumable: rerun the same command), so global steps (dedup) shuffle through the same
partitions. The new dataset keeps the old removed rows, adds the new ones, merges the old
step stats with the new, re-renders the card, rebuilds the inspection indexes and records the
input dataset's manifest hash in its own.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from codefoundry.atomic import atomic_write_json, atomic_write_text
from codefoundry.console import console
from codefoundry.data.pipeline import FILES_SCHEMA, REMOVED_SCHEMA, LocalExecutor, Step, conform, count_files
from codefoundry.data.pipeline.executor import WORK, gather_stats, unit_outputs, write_shards
from codefoundry.data.pipeline.stats import merge_all
from codefoundry.errors import UserError
from codefoundry.manifest import read_manifest, write_manifest

SUBSET = "files"


@dataclass(frozen=True)
class ShardUnit:
    """One parquet shard of an existing dataset as a work unit."""

    path: Path
    batch_rows: int = 2048

    def describe(self) -> str:
        return f"shard {self.path}"

    def read(self) -> Iterator[pa.Table]:
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_rows):
            table = pa.Table.from_batches([batch])
            yield conform(table.append_column("reason", pa.nulls(table.num_rows, pa.string())), REMOVED_SCHEMA)


def apply_steps(dataset: str | Path, out: str | Path, steps: Sequence[Step], config_update: dict[str, Any],
                extra: dict[str, Any] | None = None, workers: int | None = None, overwrite: bool = False) -> Path:
    """A new dataset at `out`: `dataset`'s kept rows through `steps`; config gets `config_update`."""
    from codefoundry.data.card import render_card
    from codefoundry.data.config import CurateConfig
    from codefoundry.data.contains import build_indexes
    from codefoundry.data.later_steps import decontaminated_against

    dataset, out = Path(dataset), Path(out)
    manifest = read_manifest(dataset, kind="dataset")
    if out.resolve() == dataset.resolve():
        raise UserError("--out must differ from the input dataset")
    if out.exists() and any(p.name != WORK for p in out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} is not empty", "choose a new --out, or pass --overwrite")
        shutil.rmtree(out)
    config = CurateConfig.model_validate(manifest.config).model_copy(update=config_update)
    units = [ShardUnit(p, config.batch_rows) for p in sorted((dataset / "data" / SUBSET).glob("*.parquet"))]
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    plan = LocalExecutor(workers or config.workers, config.batch_rows).run(work, units, list(steps))
    outputs = list(unit_outputs(work, plan, len(units)))
    old_removed = sorted((dataset / "removed" / SUBSET).glob("*.parquet"))
    write_shards([o[0] for o in outputs], out / "data" / SUBSET, FILES_SCHEMA, config.shard_max_bytes)
    new_removed = [f for o in outputs for f in o[1]]
    write_shards(old_removed + new_removed, out / "removed" / SUBSET, REMOVED_SCHEMA, config.shard_max_bytes)
    old_trees = [count_files(FILES_SCHEMA.empty_table(), pq.read_table(f, columns=["size", "lang", "licenses",
                                                                                     "license_type", "reason"]))
                 for f in old_removed]
    stats = merge_all([gather_stats(outputs, SUBSET), *old_trees])
    previous = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))["subsets"][SUBSET].get("steps", {})
    stats["subsets"][SUBSET]["steps"] = {**previous, **stats["subsets"][SUBSET].get("steps", {})}
    atomic_write_json(out / "stats.json", stats)
    atomic_write_text(out / "card.md", render_card(stats, config, list(manifest.extra.get("sources", []))))
    if config.inspection_indexes:
        build_indexes(out)
    removed = sum(pq.read_metadata(f).num_rows for f in new_removed if f.exists())
    benchmarks = set(manifest.extra.get("decontaminated_against") or [])
    if any(s.name == "decontaminate" for s in steps):
        benchmarks |= set(decontaminated_against(config))
    write_manifest(out, "dataset", config, inputs={"dataset": dataset},
                   extra={**manifest.extra, "steps": [*manifest.extra.get("steps", []), *(s.name for s in steps)],
                          "decontaminated_against": sorted(benchmarks), **(extra or {})})
    shutil.rmtree(work)
    totals = stats["subsets"][SUBSET]["totals"]
    console.print(f"{out}: {', '.join(s.name for s in steps)} removed {removed:,} files; "
                  f"kept {totals['kept_files']:,}", highlight=False)
    return out
