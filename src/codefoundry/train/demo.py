"""The demo's train stage: the `small` preset on the demo's dataset and tokenizer, ~90 s on 2 cores."""

from __future__ import annotations

from pathlib import Path

from codefoundry.errors import UserError
from codefoundry.train.config import PackConfig, TrainConfig

DEMO_SECONDS = 90.0


def demo_config(workers: int | None, seed: int) -> TrainConfig:
    # seq 256 × 8 sequences: a few dozen steps of the small preset fit in 90 s on 2 CPU cores.
    return TrainConfig(preset="small", seq_len=256, micro_batch_size=8, max_time=DEMO_SECONDS, lr=1e-3,
                       eval_interval=25, eval_batches=2, checkpoint_interval=25, seed=seed,
                       pack=PackConfig(workers=workers, seed=seed))


def run_demo_stage(out: Path, workers: int | None, seed: int) -> Path:
    """Train into `out/model` from `out/dataset` and `out/tokenizer` (made by the stages before)."""
    from codefoundry.train import train

    dataset, tokenizer, model = out / "dataset", out / "tokenizer", out / "model"
    for needed, stage in ((dataset, "data curate"), (tokenizer, "tokenizer train")):
        if not (needed / "manifest.json").exists():
            raise UserError(f"{needed} is missing: the demo's '{stage}' stage makes it")
    resume = (model / "checkpoints" / "latest.json").exists() and not (model / "manifest.json").exists()
    if (model / "manifest.json").exists():
        return model  # trained by an earlier demo run
    return train(model, tokenizer, dataset=dataset, config=demo_config(workers, seed), resume=resume)
