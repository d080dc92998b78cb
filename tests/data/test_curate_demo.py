"""The demo's curation stage: a bounded slice of site-packages + stdlib (slow: about a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codefoundry.demo import STAGES, DemoConfig, run_demo


@pytest.mark.slow
def test_demo_curates_the_embedded_corpus(tmp_path: Path) -> None:
    stage = next(s for s in STAGES if s.name == "data curate")
    assert run_demo(DemoConfig(out=tmp_path, workers=2), [stage]) == ["data curate: done"]
    stats = json.loads((tmp_path / "dataset" / "stats.json").read_text())["subsets"]["files"]
    assert stats["totals"]["kept_files"] > 1000
    assert stats["languages"]["Python"]["kept_files"] > 1000
    assert stats["license_types"]["permissive"]["kept_files"] == stats["totals"]["kept_files"]
    assert any(r.startswith("license:") for r in stats["removed"])
