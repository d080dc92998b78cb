"""The demo's eval stage: the demo's model on 10 HumanEval and 10 single-line infilling problems.

Greedy, short completions (the demo model is small and barely trained: expect pass@1 near 0 and
a few exact FIM matches); about a minute on 2 cores, every program through the sandbox.
"""

from __future__ import annotations

from pathlib import Path

from codefoundry.errors import UserError
from codefoundry.eval.harness import EvalConfig, run_eval

DEMO_LIMIT = 10


def demo_config(model: Path, workers: int | None, seed: int) -> EvalConfig:
    return EvalConfig(tasks=["humaneval", "humaneval-infilling-single-line"], model=model, limit=DEMO_LIMIT,
                      temperature=0, max_new_tokens=32, seed=seed, workers=workers)


def run_demo_stage(out: Path, workers: int | None, seed: int) -> Path:
    """Evaluate `out/model` into `out/eval` (resumes an interrupted demo run)."""
    model = out / "model"
    if not (model / "manifest.json").exists():
        raise UserError(f"{model} is missing: the demo's 'train' stage makes it")
    return run_eval(out / "eval", demo_config(model, workers, seed))
