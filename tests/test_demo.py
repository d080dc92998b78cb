"""The demo runs the built stages, reports the rest as not built, and never fakes one."""

from __future__ import annotations

from pathlib import Path

import pytest

from codefoundry.demo import DemoConfig, DemoContext, DemoStage, run_demo
from codefoundry.errors import UserError


def test_runs_built_stages_and_reports_unbuilt(tmp_path: Path) -> None:
    ran: list[Path] = []

    def make_artifact(ctx: DemoContext) -> Path:
        out = ctx.out / "thing"
        out.mkdir()
        ran.append(out)
        return out

    statuses = run_demo(DemoConfig(out=tmp_path), [DemoStage("built", 1, make_artifact), DemoStage("later", 9)])
    assert statuses == ["built: done", "later: not built yet (issue #9)"]
    assert ran == [tmp_path / "thing"] and ran[0].is_dir()


def test_stage_failure_names_the_stage(tmp_path: Path) -> None:
    def broken(ctx: DemoContext) -> Path:
        raise UserError("no corpus")

    with pytest.raises(UserError, match="demo stage 'x' failed: no corpus"):
        run_demo(DemoConfig(out=tmp_path), [DemoStage("x", 1, broken)])
