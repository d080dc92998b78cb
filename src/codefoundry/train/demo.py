"""The demo's pretraining: the `small` preset from scratch with FIM, on the demo's dataset and tokenizer.

An honest from-scratch baseline: minutes of CPU give a model that has learned code's surface
(indentation, keywords, closing brackets), not one that solves HumanEval.
"""

from __future__ import annotations

from pathlib import Path

from codefoundry.console import resumed_by
from codefoundry.errors import UserError
from codefoundry.train.config import PackConfig, TrainConfig

# inside the demo a stage resumes by rerunning the demo: `train --resume` would need flags the demo chose
DEMO_RESUME_HINT = "rerun the same `codefoundry demo` command to continue (it resumes from this checkpoint)"


def demo_config(seconds: float, workers: int | None, seed: int) -> TrainConfig:
    # seq 256 × 8 sequences per step: a step takes about a second of 2 CPU cores, so minutes give
    # a few hundred steps; lr 1e-3 (above StarCoder's 3e-4) because the run is that short.
    steps_between = max(5, round(seconds / 6))   # about 6 evaluations and checkpoints over the run
    return TrainConfig(preset="small", seq_len=256, micro_batch_size=8, max_time=seconds, lr=1e-3,
                       eval_interval=steps_between, eval_batches=2, checkpoint_interval=steps_between, seed=seed,
                       pack=PackConfig(workers=workers, seed=seed))


def run_demo_stage(out: Path, seconds: float, workers: int | None, seed: int) -> Path:
    """Train into `out/model` from `out/dataset` and `out/tokenizer`; continues an interrupted run."""
    from codefoundry.train import train

    dataset, tokenizer, model = out / "dataset", out / "tokenizer", out / "model"
    for needed, stage in ((dataset, "curate"), (tokenizer, "tokenizer")):
        if not (needed / "manifest.json").exists():
            raise UserError(f"{needed} is missing: the demo's '{stage}' stage makes it")
    resume = (model / "checkpoints" / "latest.json").exists()
    with resumed_by(DEMO_RESUME_HINT):
        return train(model, tokenizer, dataset=dataset, config=demo_config(seconds, workers, seed), resume=resume)
