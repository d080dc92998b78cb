"""One place for terminal output: the rich console (stderr), logging setup, progress bars."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)
LOG_LEVELS = ("debug", "info", "warning", "error")
_RESUME_HINT: ContextVar[str] = ContextVar("resume_hint", default="rerun with --resume to continue")


def resume_hint() -> str:
    """What an interrupted stage tells the user to do to continue: its own `--resume` flag, unless a command
    that runs it (the demo) resumes it another way (`resumed_by`)."""
    return _RESUME_HINT.get()


@contextmanager
def resumed_by(hint: str) -> Iterator[None]:
    """Within: interrupted stages say `hint` (e.g. "rerun the same `codefoundry demo` command to continue")."""
    token = _RESUME_HINT.set(hint)
    try:
        yield
    finally:
        _RESUME_HINT.reset(token)


def setup_logging(level: str = "info") -> None:
    """Route `logging` through rich on stderr at `level` (one of LOG_LEVELS)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )


def progress_bar(transient: bool = False) -> Progress:
    """A progress bar with count, rate-free ETA and elapsed time; disabled when not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (a no-op bar when stderr is not a terminal)."""
    with progress_bar() as progress:
        yield from progress.track(items, total=total, description=description)
