"""The demo's curation: a bounded slice of the embedded corpus (site-packages + stdlib)."""

from __future__ import annotations

from pathlib import Path

from codefoundry.data.config import CurateConfig
from codefoundry.data.curate import curate
from codefoundry.data.sources.unit import SourceLimits

DEMO_SOURCES = ("site-packages", "stdlib")
DEMO_LIMITS = SourceLimits(max_files_per_repo=100, max_file_bytes=200_000)
"""At most 100 files (by path order) of each installed distribution and of the stdlib, each ≤ 200 KB:
real code of every kind the environment holds, curated in about a minute on 2 cores."""


def run_demo_stage(out: Path, workers: int | None, seed: int = 0) -> Path:
    """Curate the demo slice into `out/dataset` (resumes if interrupted; instant if already done)."""
    config = CurateConfig(workers=workers, limits=DEMO_LIMITS)
    return curate(list(DEMO_SOURCES), out / "dataset", config)
