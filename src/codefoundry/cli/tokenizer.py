"""`codefoundry tokenizer …`: train a byte-level BPE tokenizer with StarCoder's special tokens."""

from __future__ import annotations

import typer

from codefoundry.cli.not_built import ANY_ARGS, not_built_command

app = typer.Typer(help="Train a code tokenizer (byte-level BPE, StarCoder special tokens).", no_args_is_help=True)
app.command("train", context_settings=ANY_ARGS)(
    not_built_command("tokenizer train", 5, "Tokenizer, the StarCoder model and the generation core"))
