"""Was the model trained on data decontaminated against the benchmark being run?

The model's manifest lineage is walked to every `dataset` artifact upstream. A dataset says
which benchmarks it was decontaminated against in a `decontaminated_against` list of
BENCHMARK_SETS names (`humaneval`, `humaneval-infilling`, `mbpp`, `multiple`), read from its
`stats.json` (top level) and from its manifest's `extra`, both read defensively (a missing or
malformed field counts as "not recorded").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codefoundry.eval.tasks import Task
from codefoundry.manifest import Manifest, lineage


def decontaminated_against(dataset: Path, manifest: Manifest) -> list[str] | None:
    """The dataset's `decontaminated_against` list (stats.json ∪ manifest extra), None if neither records it."""
    found: list[str] | None = None
    sources: list[Any] = [manifest.extra.get("decontaminated_against") if isinstance(manifest.extra, dict) else None]
    try:
        stats = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))
        sources.append(stats.get("decontaminated_against") if isinstance(stats, dict) else None)
    except (OSError, ValueError):
        pass
    for value in sources:
        if isinstance(value, list):
            found = sorted({*(found or []), *(str(v) for v in value)})
    return found


def contamination_report(model: Path | None, tasks: list[Task]) -> dict[str, Any]:
    """Per task: each upstream dataset and whether it was decontaminated against the task's benchmark."""
    if model is None:
        return {"checked": False, "why": "an endpoint has no lineage to follow"}
    datasets = [(role, path, decontaminated_against(path, m)) for role, path, m in lineage(model)
                if m.kind == "dataset"]
    if not datasets:
        return {"checked": False, "why": f"no dataset artifact in the lineage of {model}"}
    report: dict[str, Any] = {"checked": True, "read_from": "dataset stats.json `decontaminated_against` and "
                              "manifest.json extra `decontaminated_against`", "tasks": {}}
    for task in tasks:
        entries = []
        for role, path, names in datasets:
            status = None if names is None or task.benchmark is None else task.benchmark in names
            entries.append({"role": role, "dataset": str(path), "decontaminated_against": names,
                            "decontaminated": status})
        statuses = [e["decontaminated"] for e in entries]
        verdict = ("decontaminated" if all(s is True for s in statuses) else
                   "NOT decontaminated" if any(s is False for s in statuses) else "unknown (not recorded)")
        report["tasks"][task.name] = {"benchmark": task.benchmark, "verdict": verdict, "datasets": entries}
    return report
