"""codefoundry.report: the demo's report, one self-contained HTML page from the artifacts of a demo run.

    write_report(Path("demo-out"))   # → demo-out/report.html (also served at /ui/report)

Pieces: `facts` (read the artifacts into plain data), `plots` (matplotlib PNGs as data URIs),
`page` (the HTML).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codefoundry.atomic import atomic_write_text

REPORT_NAME = "report.html"


def write_report(out: Path, stage_order: Sequence[str] = ()) -> Path:
    """Gather what the demo's artifacts under `out` say and write `out/report.html`; return its path.
    `stage_order`: the demo's stage names, the order of the timings table."""
    from codefoundry.report.facts import gather
    from codefoundry.report.page import render

    path = out / REPORT_NAME
    atomic_write_text(path, render({**gather(out), "stage_order": list(stage_order)}))
    return path


__all__ = ["REPORT_NAME", "write_report"]
