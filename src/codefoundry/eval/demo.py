"""The demo's evaluation: each model on the first HumanEval problems and single-line infilling problems.

Greedy (temperature 0, one sample: pass@1 is the share of problems solved), every program
through the sandbox; the subsets' sizes come from the demo's budget and are written in each
results.json (`config.limit`) and printed. The three models:

    model       the `small` preset pretrained from scratch (expect pass@1 0: minutes of CPU)
    base        SmolLM2-135M-Instruct as shipped (+ StarCoder's FIM tokens)
    finetuned   base/ with the LoRA adapter adapters/code, served beside the base (no merged copy)

base and finetuned are evaluated together: one loaded model, one continuous batch of both tasks' requests
of both, each through its own adapter (`run_evals`), half the model passes of two separate evaluations'
tails and one model load; each still gets its own `eval/<name>/<task>/` artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from codefoundry.console import console
from codefoundry.errors import UserError
from codefoundry.eval.harness import EvalConfig, run_evals

if TYPE_CHECKING:
    from codefoundry.demo_plan import DemoPlan

HUMANEVAL, INFILLING = "humaneval", "humaneval-infilling-single-line"
MODELS = {"model": "pretrained from scratch (small)", "base": "SmolLM2-135M base", "finetuned": "SmolLM2-135M + LoRA"}
# what each evaluated name is made of under out/: (model dir, adapter dir or None)
SOURCES = {"model": ("model", None), "base": ("base", None), "finetuned": ("base", "adapters/code")}


def demo_configs(model: Path, plan: DemoPlan, workers: int | None, seed: int,
                 adapter: Path | None = None) -> list[EvalConfig]:
    """One config per task: each has its own problem limit and completion length."""
    common = {"model": model, "adapter": adapter, "temperature": 0, "n_samples": 1, "ks": [1], "seed": seed,
              "workers": workers}
    return [EvalConfig(tasks=[HUMANEVAL], limit=plan.humaneval_limit, max_new_tokens=plan.humaneval_new_tokens,
                       **common),
            EvalConfig(tasks=[INFILLING], limit=plan.infilling_limit, max_new_tokens=plan.infilling_new_tokens,
                       **common)]


def run_demo_stage(out: Path, names: list[str], plan: DemoPlan, workers: int | None, seed: int) -> list[Path]:
    """Evaluate each of `names` (see SOURCES) into `out/eval/<name>/<task>/`, then mark each `out/eval/<name>`
    done with a manifest. Names over the same model (base, and base + its adapter) share one loaded model and
    one continuous batch: every task of every one of them at once, each request through its own adapter."""
    from codefoundry.manifest import write_manifest

    sources = {}
    for name in names:
        model_name, adapter_name = SOURCES[name]
        model, adapter = out / model_name, out / adapter_name if adapter_name else None
        for needed in (model, adapter):
            if needed is not None and not (needed / "manifest.json").exists():
                raise UserError(f"{needed} is missing: an earlier demo stage makes it")
        sources[name] = (model, adapter)
    runs = []
    for name, (model, adapter) in sources.items():
        for config in demo_configs(model, plan, workers, seed, adapter):
            task_dir = out / "eval" / name / config.tasks[0]
            if not (task_dir / "manifest.json").exists():       # each task's own run resumes from its samples
                task_dir.mkdir(parents=True, exist_ok=True)
                runs.append((task_dir, config))
    for model in dict.fromkeys(model for model, _ in sources.values()):
        # served, also when a resumed run has one evaluation left: its completions come the same way
        run_evals([(task_dir, config) for task_dir, config in runs if config.model == model], served_adapters=True)
    dests = []
    for name, (model, adapter) in sources.items():
        dest = out / "eval" / name
        write_manifest(dest, "eval-demo", {"humaneval_limit": plan.humaneval_limit,
                                           "infilling_limit": plan.infilling_limit}, seed=seed,
                       inputs={"model": model, **({"adapter": adapter} if adapter else {})},
                       extra={"tasks": [HUMANEVAL, INFILLING]})
        dests.append(dest)
    return dests


def read_scores(out: Path) -> dict[str, dict[str, Any]]:
    """{model: {"humaneval": results, "infilling": results}} for each evaluated model (results.json's entries)."""
    scores: dict[str, dict[str, Any]] = {}
    for name in MODELS:
        row: dict[str, Any] = {}
        for key, task in (("humaneval", HUMANEVAL), ("infilling", INFILLING)):
            path = out / "eval" / name / task / "results.json"
            if path.exists():
                document = json.loads(path.read_text(encoding="utf-8"))
                row[key] = {**document["results"][task], "contamination": document.get("contamination")}
        if row:
            scores[name] = row
    return scores


def print_scores(out: Path) -> None:
    """The evaluation table: pass@1 on HumanEval and exact match on single-line infilling, per model."""
    scores = read_scores(out)
    if not scores:
        return
    table = Table(title="evaluation (greedy, first problems of each task)")
    for column in ("model", "HumanEval pass@1", "infilling exact match"):
        table.add_column(column)
    for name, row in scores.items():
        table.add_row(MODELS[name], format_score(row.get("humaneval"), "pass@1"),
                      format_score(row.get("infilling"), "exact_match"))
    console.print(table)


def format_score(result: dict[str, Any] | None, metric: str) -> str:
    if not result or metric not in result:
        return "–"
    problems = result["problems"]
    return f"{result[metric]:.3f} ({round(result[metric] * problems)}/{problems})"
