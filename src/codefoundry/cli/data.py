"""`codefoundry data …`: curate sources into a dataset/ artifact and inspect it."""

from __future__ import annotations

import typer

from codefoundry.cli.not_built import ANY_ARGS, not_built_command

app = typer.Typer(help="Curate code into a dataset/ artifact (The Stack's pipeline) and inspect it.",
                  no_args_is_help=True)
app.command("curate", context_settings=ANY_ARGS)(
    not_built_command("data curate", 3, "Data curation I: sources, language, license, quality filters"))
