"""The dataset verbs: a finished dataset through one section's steps into a new dataset.

    dedup_dataset           `data dedup`           exact + near dedup
    decontaminate_dataset   `data decontaminate`   benchmark decontamination
    redact_pii_dataset      `data redact-pii`      PII redaction
    opt_out_dataset         `data opt-out`         repositories left out (the list's sha256 in the manifest)

The input's `data/<subset>` shards become the work units of the same executor curate uses
(files, and each other subset as a part of the job with its own copy of the steps), so
global steps (dedup) shuffle through the same partitions, and the new dataset is made by the
same `make_dataset` (resumable, guarded by its run key). Its config is the input's with the
verb's section replaced, so `removed_content` and every other setting carry over; its
removed/ holds the input's removed rows and the new ones.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from codefoundry.data.config import CurateConfig
from codefoundry.data.decontam import DecontamConfig
from codefoundry.data.dedup import DedupConfig
from codefoundry.data.finalize import SUBSET, Job, make_dataset
from codefoundry.data.optout import OptOut, OptOutConfig, OptOutList
from codefoundry.data.pii import PiiConfig
from codefoundry.data.pipeline import REMOVED_SCHEMA, Step, conform
from codefoundry.data.steps import decontamination_steps, dedup_steps, pii_steps
from codefoundry.data.subsets.part import SUBSETS, Part
from codefoundry.data.subsets.parts import NO_NEAR_DEDUP
from codefoundry.manifest import check_out_dir, read_manifest


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


def derive(dataset: str | Path, out: str | Path, steps: list[Step], section: Mapping[str, Any], *,
           extra: Mapping[str, Any] | None = None, workers: int | None = None, overwrite: bool = False) -> Path:
    """A new dataset at `out`: `dataset`'s kept rows through `steps`, its config with `section` replaced."""
    dataset, out = Path(dataset), Path(out)
    manifest = read_manifest(dataset, kind="dataset")
    check_out_dir(out, "dataset", {"input dataset": dataset})
    update = {**section, **({"workers": workers} if workers else {})}
    config = CurateConfig.model_validate(manifest.config).model_copy(update=update)
    units = [ShardUnit(p, config.batch_rows) for p in sorted((dataset / "data" / SUBSET).glob("*.parquet"))]
    sources = [str(s) for s in manifest.extra.get("sources", [])]
    parts = [Part(subset, subset, [ShardUnit(p, config.batch_rows) for p in shards], _steps_for(subset, steps))
             for subset in SUBSETS[1:]
             if (shards := sorted((dataset / "data" / subset).glob("*.parquet")))]
    return make_dataset(Job(out, units, steps, config, sources, base=dataset, extra=extra or {}, parts=parts),
                        overwrite=overwrite)


def _steps_for(subset: str, steps: list[Step]) -> list[Step]:
    """A subset's own copy of a verb's steps (without near dedup where the subset has none)."""
    return [copy.deepcopy(s) for s in steps if not (subset in NO_NEAR_DEDUP and s.name == "near_dedup")]


def dedup_dataset(dataset: str | Path, out: str | Path, config: DedupConfig | None = None, *,
                  workers: int | None = None, overwrite: bool = False) -> Path:
    """Exact + near dedup of a finished dataset into a new one."""
    config = config or DedupConfig()
    return derive(dataset, out, dedup_steps(config), {"dedup": config}, workers=workers, overwrite=overwrite)


def decontaminate_dataset(dataset: str | Path, out: str | Path, config: DecontamConfig | None = None, *,
                          workers: int | None = None, overwrite: bool = False) -> Path:
    """Remove a finished dataset's files that hold benchmark material, into a new dataset."""
    config = config or DecontamConfig()
    return derive(dataset, out, decontamination_steps(config), {"decontamination": config}, workers=workers,
                  overwrite=overwrite)


def redact_pii_dataset(dataset: str | Path, out: str | Path, config: PiiConfig | None = None, *,
                       workers: int | None = None, overwrite: bool = False) -> Path:
    """Redact PII in a finished dataset's kept files, into a new dataset."""
    config = config or PiiConfig()
    return derive(dataset, out, pii_steps(config), {"pii": config}, workers=workers, overwrite=overwrite)


def opt_out_dataset(dataset: str | Path, list_file: str | Path, out: str | Path, *, workers: int | None = None,
                    overwrite: bool = False) -> Path:
    """A copy of `dataset` without the listed repositories; the list's sha256 goes into the manifest."""
    config = OptOutConfig(file=Path(list_file))
    entries = OptOutList.from_config(config)
    return derive(dataset, out, [OptOut(entries)], {"opt_out": config},
                  extra={"opt_out_sha256": entries.sha256, "opt_out_entries": len(entries)},
                  workers=workers, overwrite=overwrite)
