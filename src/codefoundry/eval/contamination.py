"""Was the model trained on data decontaminated against the benchmark being run?

The datasets that trained the model's weights are found along its manifests' inputs
(`codefoundry.lineage.training_datasets`: through LoRA adapters, their base models and merges,
not through tokenizers, nor to the raw dataset a derived one came from). A dataset says which
benchmarks it was decontaminated against in a `decontaminated_against` list of BENCHMARK_SETS
names (`humaneval`, `humaneval-infilling`, `mbpp`, `multiple`), read from its `stats.json` (top
level) and from its manifest's `extra`. A recorded dataset no longer on disk counts as "not
recorded".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codefoundry.eval.tasks import Task
from codefoundry.lineage import decontaminated_against, training_datasets

__all__ = ["contamination_report", "decontaminated_against"]


def contamination_report(model: Path | None, tasks: list[Task], adapters: Sequence[Path] = ()) -> dict[str, Any]:
    """Per task: each dataset that trained `model` (and the `adapters` run over it), and whether it was
    decontaminated against the task's benchmark."""
    if model is None:
        return {"checked": False, "why": "an endpoint has no lineage to follow"}
    datasets = []
    for artifact in (Path(model), *map(Path, adapters)):
        datasets += [(u.role if artifact == Path(model) else f"{artifact.name}:{u.role}", u.path,
                      decontaminated_against(u.path, u.manifest) if u.manifest is not None else None)
                     for u in training_datasets(artifact)]
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
