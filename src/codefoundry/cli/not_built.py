"""Commands for stages that are not built yet: they say so plainly, whatever flags are given."""

from __future__ import annotations

from collections.abc import Callable

import typer

from codefoundry.errors import NotBuiltError

ANY_ARGS = {"ignore_unknown_options": True, "allow_extra_args": True}


def not_built_command(command: str, issue: int, title: str) -> Callable[[typer.Context], None]:
    """A command body that refuses with 'not built yet (issue #N: title)'."""

    def refuse(ctx: typer.Context) -> None:
        raise NotBuiltError(f"`codefoundry {command}` is not built yet (issue #{issue}: {title})")

    refuse.__doc__ = f"[not built yet: issue #{issue}, {title}]"
    return refuse
