"""Per-step stats of a curation run: rows in and out chain from step to step in stats.json and the
card, and each step's wall time lands in the manifest (kept out of stats.json: same input, same bytes)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from codefoundry.manifest import read_manifest


def test_every_step_has_rows_in_and_out_that_chain(tiny_dataset: Path) -> None:
    manifest = read_manifest(tiny_dataset, kind="dataset")
    order = manifest.extra["steps"]
    steps = json.loads((tiny_dataset / "stats.json").read_text())["subsets"]["files"]["steps"]
    assert set(steps) == set(order) and len(order) >= 8
    totals = json.loads((tiny_dataset / "stats.json").read_text())["subsets"]["files"]["totals"]
    for before, after in itertools.pairwise(order):
        assert steps[before]["kept"] == steps[after]["rows_in"], (before, after)
        removed = sum(steps[before]["removed"].values())
        assert steps[before]["rows_in"] == steps[before]["kept"] + removed, before
    assert steps[order[-1]]["kept"] == totals["kept_files"]
    assert all("seconds" not in s for s in steps.values())


def test_each_step_wall_time_is_in_the_manifest(tiny_dataset: Path) -> None:
    manifest = read_manifest(tiny_dataset, kind="dataset")
    seconds = manifest.extra["step_seconds"]
    assert set(seconds) == set(manifest.extra["steps"])
    steps = json.loads((tiny_dataset / "stats.json").read_text())["subsets"]["files"]["steps"]
    assert all(t > 0 for name, t in seconds.items() if steps[name]["rows_in"]), seconds
    workers = manifest.config.get("workers") or os.cpu_count() or 1   # steps run in parallel in the workers
    assert sum(seconds.values()) <= manifest.extra["seconds"] * workers


def test_card_shows_the_steps_table(tiny_dataset: Path) -> None:
    card = (tiny_dataset / "card.md").read_text()
    steps = json.loads((tiny_dataset / "stats.json").read_text())["subsets"]["files"]["steps"]
    assert "| step | rows in | kept | removed |" in card
    for name, s in steps.items():
        assert f"| {name} | {s['rows_in']:,} | {s['kept']:,} |" in card
