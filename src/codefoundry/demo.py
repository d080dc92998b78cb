"""The demo: every stage, in pipeline order, on the embedded default corpus.

Each stage is a `DemoStage` whose `run` takes the demo context and returns the artifact it
made; a stage that fails stops the demo with its name in the error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from codefoundry.config import StageConfig
from codefoundry.console import console
from codefoundry.errors import UserError


class DemoConfig(StageConfig):
    """Settings of `codefoundry demo`; each stage's own defaults apply inside it."""

    out: Path = Path("demo-out")
    """Directory that receives one artifact directory per stage."""
    workers: int | None = None
    """Worker processes for parallel stages (None: number of cores)."""
    seed: int = 0


@dataclass(frozen=True)
class DemoContext:
    config: DemoConfig

    @property
    def out(self) -> Path:
        return self.config.out


@dataclass(frozen=True)
class DemoStage:
    name: str
    run: Callable[[DemoContext], Path]


def _data_curate(ctx: DemoContext) -> Path:
    """A bounded slice of site-packages + stdlib (limits in codefoundry.data.demo), about a minute on 2 cores."""
    from codefoundry.data.demo import run_demo_stage

    return run_demo_stage(ctx.out, ctx.config.workers, ctx.config.seed)


def _tokenizer_train(ctx: DemoContext) -> Path:
    """An 8K-vocab tokenizer on up to 20 MB of the curated dataset (about a minute on 2 cores)."""
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    dataset = ctx.out / "dataset"
    if not (dataset / "manifest.json").exists():
        raise UserError(f"no curated dataset at {dataset}", "the 'data curate' stage writes it")
    out = ctx.out / "tokenizer"
    if (out / "manifest.json").exists():
        return out  # trained by an earlier demo run; the model's lineage points at this one
    config = TokenizerTrainConfig(vocab_size=8192, byte_budget=20_000_000, seed=ctx.config.seed)
    return train_tokenizer(dataset, out, config)


def _train(ctx: DemoContext) -> Path:
    from codefoundry.train.demo import run_demo_stage

    return run_demo_stage(ctx.out, ctx.config.workers, ctx.config.seed)


def _eval(ctx: DemoContext) -> Path:
    from codefoundry.eval.demo import run_demo_stage

    return run_demo_stage(ctx.out, ctx.config.workers, ctx.config.seed)


def _serve(ctx: DemoContext) -> Path:
    from codefoundry.serve.demo import run_demo_stage

    return run_demo_stage(ctx.out, ctx.config.workers, ctx.config.seed)


STAGES: list[DemoStage] = [
    DemoStage("data curate", _data_curate),
    DemoStage("tokenizer train", _tokenizer_train),
    DemoStage("train", _train),
    DemoStage("eval", _eval),
    DemoStage("serve", _serve),
]


def run_demo(config: DemoConfig, stages: list[DemoStage] | None = None) -> list[str]:
    """Run the stages into `config.out`; print and return one status line per stage."""
    ctx = DemoContext(config)
    ctx.out.mkdir(parents=True, exist_ok=True)
    table = Table(title="codefoundry demo")
    for column in ("stage", "status", "artifact", "seconds"):
        table.add_column(column)
    statuses = []
    for stage in stages or STAGES:
        console.rule(f"[bold]{stage.name}")
        start = time.perf_counter()
        try:
            artifact = str(stage.run(ctx))
        except UserError as e:
            raise UserError(f"demo stage '{stage.name}' failed: {e}", e.hint) from e
        table.add_row(stage.name, "done", artifact, f"{time.perf_counter() - start:.1f}")
        statuses.append(f"{stage.name}: done")
    console.print(table)
    return statuses
