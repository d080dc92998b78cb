"""The `codefoundry` command: `codefoundry <stage> [<verb>] …`, one module per stage.

A stage with verbs is a Typer `app` in its module; a single-action stage (eval, serve, demo)
exports `command` and its `COMMAND` settings (help epilog, context settings).

This file is the table of contents; each stage's commands live in their own module and
only call that stage's public API. User mistakes end in one `error:` line and a non-zero
exit; `--verbose` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import traceback

import click
import typer
from rich.markup import escape

from codefoundry import __version__
from codefoundry.cli import data, demo, eval, finetune, model, serve, tokenizer, train
from codefoundry.cli.common import examples
from codefoundry.console import LOG_LEVELS, console, setup_logging
from codefoundry.errors import UserError

app = typer.Typer(
    name="codefoundry",
    help="Build code LLMs end to end: curate → tokenizer → train (FIM) → eval → serve.",
    epilog=examples(
        "codefoundry demo",
        "codefoundry data curate site-packages --out dataset/",
        "codefoundry tokenizer train dataset/ --out tokenizer/ --vocab-size 8192",
        "codefoundry --log-level debug data curate ./my-repos --out dataset/",
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data.app, name="data")
app.add_typer(tokenizer.app, name="tokenizer")
app.add_typer(train.app, name="train")
app.add_typer(model.app, name="model")
app.add_typer(finetune.app, name="finetune")
app.command("eval", **eval.COMMAND)(eval.command)
app.command("serve", **serve.COMMAND)(serve.command)
app.command("demo", **demo.COMMAND)(demo.command)

VERBOSE_FLAGS = ("--verbose", "-v")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"codefoundry {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
    log_level: str = typer.Option("info", "--log-level", help=f"One of {', '.join(LOG_LEVELS)}."),
    verbose: bool = typer.Option(False, *VERBOSE_FLAGS, help="Show tracebacks on errors (any position)."),
) -> None:
    if log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"must be one of {', '.join(LOG_LEVELS)}, given {log_level!r}",
                                 param_hint="--log-level")
    setup_logging("debug" if verbose and log_level == "info" else log_level.lower())


def _plain_help(command: click.Command) -> click.Command:
    """`command` and its subcommands with help texts shown as written.

    Typer renders help through rich markup, which would swallow a bracketed word in an option's help
    (`pip install 'codefoundry[ray]'`), and keeps a docstring's line breaks after its first paragraph,
    so sentences broke mid-line at the docstring's width.
    """
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    for param in command.params:
        help_text = getattr(param, "help", None)
        if help_text:
            param.help = escape(help_text)  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)
    return command


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args) or bool(os.environ.get("CODEFOUNDRY_DEBUG"))
    args = [a for a in args if a not in VERBOSE_FLAGS]
    if verbose:
        args.insert(0, "--verbose")
    command = _plain_help(typer.main.get_command(app))
    try:
        result = command.main(args=args, prog_name="codefoundry", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # typer's click: usage errors, bad parameters
        if verbose:
            traceback.print_exc()
        ctx = getattr(e, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        console.print(f"[red]error:[/red] {escape(e.format_message())}{escape(where)}", highlight=False, soft_wrap=True)
        return 2
    except UserError as e:
        if verbose:
            traceback.print_exc()
        hint = f" ({e.hint})" if e.hint else ""
        console.print(f"[red]error:[/red] {escape(str(e))}{escape(hint)}", highlight=False, soft_wrap=True)
        return 1
    except (KeyboardInterrupt, typer.Abort):
        console.print("[yellow]interrupted[/yellow]: rerun the same command to resume", highlight=False)
        return 130
    except Exception as e:
        if verbose:
            traceback.print_exc()
        else:
            logging.getLogger(__name__).debug("internal error", exc_info=True)
            console.print(f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))} (rerun with --verbose "
                          "for the traceback, and please report it)", highlight=False, soft_wrap=True)
        return 1


def main() -> None:
    sys.exit(run())
