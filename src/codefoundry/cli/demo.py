"""`codefoundry demo`: run every stage on the embedded default corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import ConfigOpt, SeedOpt, WorkersOpt, examples, stage_config

COMMAND = {"epilog": examples("codefoundry demo", "codefoundry demo --out /tmp/cf-demo --workers 2",
                              "codefoundry demo --config demo.yaml")}


def command(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where the demo's artifacts go.",
                                             show_default="demo-out")] = None,
    workers: WorkersOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the main job (curate → tokenizer → train → eval → serve) on the embedded corpus.

    Each stage's artifact goes into its own directory under --out.
    """
    from codefoundry.demo import DemoConfig, run_demo

    run_demo(stage_config(DemoConfig, config, out=out, workers=workers, seed=seed))
