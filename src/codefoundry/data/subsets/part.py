"""A part of a curation run: one subset's work units and steps, run by the executor in its own folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from codefoundry.data.pipeline import Step, WorkUnit

SUBSETS = ("files", "notebooks", "commits", "issues")
"""Every subset a dataset may hold (`data/<subset>/`), in the order they are written."""


@dataclass(frozen=True)
class Part:
    """Rows of `subset` from `units` through `steps`; `key` names its folder under `.work/subsets/`.

    A subset may have several parts (the two notebook forms, each deduplicated on its own);
    their rows are gathered in order into the subset's shards."""

    subset: str
    key: str
    units: Sequence[WorkUnit]
    steps: list[Step]

    def describe(self) -> dict[str, object]:
        return {"subset": self.subset, "key": self.key, "units": [u.describe() for u in self.units],
                "steps": [s.name for s in self.steps]}
