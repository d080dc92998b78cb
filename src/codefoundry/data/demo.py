"""The demo's curation: a bounded slice of the embedded corpus (site-packages + stdlib) by default."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codefoundry.data.config import CurateConfig
from codefoundry.data.curate import curate
from codefoundry.data.sources.unit import SourceLimits

MAX_FILE_BYTES = 200_000
"""Files over 200 KB are left out of the demo (generated tables, vendored bundles): they cost time, teach little."""
DEMO_SOURCES = ("site-packages", "stdlib")
"""The embedded corpus: this machine's installed distributions and standard library, each a repository."""
DEMO_LIMITS = SourceLimits(max_files_per_repo=100, max_file_bytes=MAX_FILE_BYTES)
"""The slice the default budget (15 min) curates: the first 100 files of each repository."""


def run_demo_stage(out: Path, sources: Sequence[str], files_per_repo: int, workers: int | None) -> Path:
    """Curate the first `files_per_repo` files (path order) of each repository of `sources` into `out/dataset`.

    The full default pipeline runs (license policy, quality filters, dedup, PII, decontamination);
    it resumes if interrupted.
    """
    limits = DEMO_LIMITS.model_copy(update={"max_files_per_repo": files_per_repo})
    return Path(curate(list(sources), out / "dataset", CurateConfig(workers=workers, limits=limits)))
