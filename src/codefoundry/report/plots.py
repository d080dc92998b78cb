"""The report's plots: matplotlib (Agg) figures as PNG `data:` URIs, so the page needs no other file."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

WIDTH, HEIGHT, DPI = 6.4, 3.4, 100


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(WIDTH, HEIGHT))


def _data_uri(plt, fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def bars(labels: Sequence[str], values: Sequence[float], xlabel: str, title: str) -> str:
    """Horizontal bars, largest on top."""
    plt, fig, ax = _figure()
    order = sorted(range(len(values)), key=lambda i: values[i])
    ax.barh([labels[i] for i in order], [values[i] for i in order], color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.set_figheight(max(HEIGHT, 0.28 * len(labels) + 1.2))
    return _data_uri(plt, fig)


def loss_curves(runs: dict[str, dict[str, Any]]) -> str:
    """Training and validation loss per step, one colour per run (pretraining, fine-tuning)."""
    plt, fig, axes = _figure()
    fig.clf()
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (name, run) in zip(axes, runs.items(), strict=True):
        if run["train"]:
            ax.plot(*zip(*run["train"], strict=True), linewidth=1, label="train")
        if run["val"]:
            ax.plot(*zip(*run["val"], strict=True), "o-", label="validation")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.set_figwidth(WIDTH * max(1, len(runs)) * 0.75)
    return _data_uri(plt, fig)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str) -> str:
    """Bars per group (a metric), one bar per series (a model)."""
    plt, fig, ax = _figure()
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(1e-9, max((v for vs in series.values() for v in vs), default=0)) * 1.25 or 1)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _data_uri(plt, fig)
