"""Shared pieces of the CLI: option aliases with their help text, examples, config loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperOption

from codefoundry.config import StageConfig, load_config

C = TypeVar("C", bound=StageConfig)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML/JSON file with this stage's settings; flags override it.",
                 show_default=False),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output artifact directory.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: the config's).")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", "-j", min=1, help="Worker processes (default: number of cores).")
]
DatasetOpt = Annotated[Path | None, typer.Option("--dataset", help="Input dataset/ artifact.")]
TokenizerOpt = Annotated[Path | None, typer.Option("--tokenizer", help="Input tokenizer/ artifact.")]
ModelOpt = Annotated[
    Path | None, typer.Option("--model", help="Input model: a model/ directory (HF format) or a .gguf file.")
]


def examples(*commands: str) -> str:
    """An `--help` epilog listing runnable example commands, one per line."""
    lines = "\n\n".join(f"  $ {escape(c)}" for c in commands)
    return f"[bold]Examples[/bold]\n\n{lines}"


def stage_config(model: type[C], config_file: Path | None, **flags: Any) -> C:
    """The stage's config: defaults < `--config` file < the flags given (None = not given)."""
    return load_config(model, config_file, flags)


def defaults_from(load: Callable[[], type[StageConfig]], **fields: str) -> type[TyperCommand]:
    """A command class whose `--help` fills "{default}" in an option's help from the stage config's default.

    `load` imports the config class when help is shown, not when the CLI starts (a stage's package can
    take seconds to import). `fields` maps a parameter name to a dotted config field where they differ.
    """

    class Command(TyperCommand):
        def format_help(self, ctx: Any, formatter: Any) -> None:
            defaults = load()()
            for param in self.params:
                if isinstance(param, TyperOption) and param.help and "{default}" in param.help:
                    value: Any = defaults
                    for part in fields.get(param.name or "", param.name or "").split("."):
                        value = getattr(value, part)
                    shown = ("yes" if value else "no") if isinstance(value, bool) else value
                    param.help = param.help.replace("{default}", str(shown))
            super().format_help(ctx, formatter)

    return Command
