"""The live console view of a training run (rich, on stderr; plain log lines when not a terminal)."""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.live import Live
from rich.table import Table

from codefoundry.console import console

log = logging.getLogger(__name__)
PLAIN_EVERY_S = 10.0  # without a terminal: one log line per this many seconds


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class LiveView:
    """`with LiveView(total_steps, max_time): view.update(record)` for each logged step."""

    def __init__(self, total_steps: int | None, max_time: float | None, enabled: bool = True) -> None:
        self.total, self.max_time, self.enabled = total_steps, max_time, enabled
        self.live: Live | None = None
        self.last_plain = 0.0
        self.val_loss: float | None = None

    def __enter__(self) -> LiveView:
        if self.enabled and console.is_terminal:
            self.live = Live(self._table({}), console=console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def _table(self, r: dict[str, Any]) -> Table:
        table = Table(title="codefoundry train", show_header=True, header_style="bold")
        for column in ("step", "loss", "val loss", "lr", "grad norm", "tokens", "tok/s", "MFU", "elapsed"):
            table.add_column(column, justify="right")
        if r:
            of = f"/{self.total}" if self.total else (f" ({r['elapsed_s']:.0f}/{self.max_time:.0f}s)"
                                                     if self.max_time else "")
            mfu = None if r.get("mfu") is None else 100 * r["mfu"]
            table.add_row(f"{r['step']}{of}", _fmt(r["loss"], ".4f"), _fmt(self.val_loss, ".4f"),
                          _fmt(r["lr"], ".2e"), _fmt(r["grad_norm"], ".3f"), f"{r['tokens']:,}",
                          _fmt(r["tokens_per_s"], ",.0f"), _fmt(mfu, ".1f") + ("%" if mfu is not None else ""),
                          f"{r['elapsed_s']:.0f}s")
        return table

    def update(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if record.get("val_loss") is not None:
            self.val_loss = record["val_loss"]
        if self.live is not None:
            self.live.update(self._table(record))
            return
        now = time.monotonic()
        if now - self.last_plain >= PLAIN_EVERY_S or record.get("val_loss") is not None:
            self.last_plain = now
            log.info("step %s loss %.4f val %s lr %.2e grad %.3f tok/s %.0f", record["step"], record["loss"],
                     _fmt(self.val_loss, ".4f"), record["lr"], record["grad_norm"], record["tokens_per_s"])
