"""The `dedup:` section: exact and near dedup settings (each defined beside its step)."""

from __future__ import annotations

from codefoundry.config import StageConfig
from codefoundry.data.dedup.exact import ExactDedupConfig
from codefoundry.data.dedup.near import NearDedupConfig


class DedupConfig(StageConfig):
    """Exact dedup then near dedup; defaults are BigCode's (bigcode-dataset `near_deduplication/`)."""

    exact: ExactDedupConfig = ExactDedupConfig()
    near: NearDedupConfig = NearDedupConfig()
