"""What every repository-reading work unit carries: the read limits and license settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codefoundry.data.config import SourceLimits
from codefoundry.data.license import PERMISSIVE
from codefoundry.data.license.match import DEFAULT_THRESHOLD


@dataclass(frozen=True)
class ReadOptions:
    limits: SourceLimits = field(default_factory=SourceLimits)
    permissive: tuple[str, ...] = PERMISSIVE
    license_threshold: float = DEFAULT_THRESHOLD
    batch_rows: int = 2048

    def kwargs(self) -> dict[str, Any]:
        return {"limits": self.limits, "permissive": self.permissive, "license_threshold": self.license_threshold,
                "batch_rows": self.batch_rows}
