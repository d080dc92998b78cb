"""Fill the local model card's `model-index` (HF model-card metadata) with the scores just measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from codefoundry.atomic import atomic_write_text
from codefoundry.console import console

# the dataset ids the Hub's model-index uses for these benchmarks (as StarCoder's card)
HUB_DATASETS = {"humaneval": ("openai_humaneval", "HumanEval"), "mbpp": ("mbpp", "MBPP")}


def _dataset(task: str) -> tuple[str, str]:
    if task in HUB_DATASETS:
        return HUB_DATASETS[task]
    if task.startswith("multiple-"):
        return "nuprl/MultiPL-E", f"MultiPL-HumanEval ({task.removeprefix('multiple-')})"
    if task.startswith("humaneval-infilling-"):
        return "openai/human-eval-infilling", task
    return task, task


def update_model_index(model_dir: Path, results: dict[str, dict[str, Any]]) -> bool:
    """Replace this run's tasks in `model_dir/README.md`'s model-index; False when there is no card."""
    card = model_dir / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except OSError:
        return False
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        console.print(f"[yellow]warning[/yellow]: {card} has no YAML front matter; model-index not updated")
        return False
    head, body = text[4:].split("\n---\n", 1)
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError:
        console.print(f"[yellow]warning[/yellow]: {card} front matter is not valid YAML; model-index not updated")
        return False
    index = meta.get("model-index") or [{"name": model_dir.name, "results": []}]
    entry = index[0]
    kept = [r for r in entry.get("results") or [] if r.get("dataset", {}).get("codefoundry_task") not in results]
    for task, metrics in results.items():
        dtype, dname = _dataset(task)
        values = [{"name": k, "type": k, "value": round(v, 4), "verified": False}
                  for k, v in metrics.items() if isinstance(v, float)]
        kept.append({"task": {"type": "text-generation"},
                     "dataset": {"type": dtype, "name": dname, "codefoundry_task": task},
                     "metrics": values})
    entry["results"] = kept
    meta["model-index"] = index
    atomic_write_text(card, "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body)
    return True
