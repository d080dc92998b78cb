"""What every repository-reading work unit carries: the read limits and license settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.license import PERMISSIVE
from codefoundry.data.license.match import DEFAULT_THRESHOLD


class SourceLimits(StageConfig):
    """Bounds on reading (also how the demo curates a slice of site-packages + stdlib)."""

    max_file_bytes: int = Field(1_000_000, ge=1)         # The Stack: files over 1 MB left out
    max_files_per_repo: int | None = Field(None, ge=1)   # None: every file
    max_repos: int | None = Field(None, ge=1)            # None: every repository
    max_archive_bytes: int = Field(2_000_000_000, ge=1)  # total uncompressed bytes read from one archive
    max_archive_members: int = Field(200_000, ge=1)
    table_rows_per_unit: int = Field(20_000, ge=1)       # JSONL/Parquet/HF rows per work unit


@dataclass(frozen=True)
class ReadOptions:
    limits: SourceLimits = field(default_factory=SourceLimits)
    permissive: tuple[str, ...] = PERMISSIVE
    license_threshold: float = DEFAULT_THRESHOLD
    batch_rows: int = 2048
    only_suffixes: tuple[str, ...] = ()
    """Read only files whose names end in one of these (lowercase, e.g. ".ipynb"); empty: every file."""
    skip_suffixes: tuple[str, ...] = ()
    """Leave out files whose names end in one of these (another subset reads them)."""

    def kwargs(self) -> dict[str, Any]:
        return {"limits": self.limits, "permissive": self.permissive, "license_threshold": self.license_threshold,
                "batch_rows": self.batch_rows, "only_suffixes": self.only_suffixes,
                "skip_suffixes": self.skip_suffixes}

    def selects(self, path: str) -> bool:
        """Whether a file of this path is read by these options (the suffix selection)."""
        name = path.lower()
        if self.only_suffixes and not name.endswith(self.only_suffixes):
            return False
        return not (self.skip_suffixes and name.endswith(self.skip_suffixes))
