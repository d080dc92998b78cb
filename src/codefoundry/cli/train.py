"""`codefoundry train`: pretrain a StarCoder-style model with FIM (and `train pack`)."""

from __future__ import annotations

import typer

from codefoundry.cli.not_built import ANY_ARGS, not_built_command

app = typer.Typer(help="Pack a dataset into tokens and pretrain a model with fill-in-the-middle.",
                  invoke_without_command=True, context_settings=ANY_ARGS)
app.callback()(not_built_command("train", 6, "Pretraining with fill-in-the-middle"))
