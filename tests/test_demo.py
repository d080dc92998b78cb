"""The demo runs its stages in order and names the one that fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from codefoundry.demo import DemoConfig, DemoContext, DemoStage, run_demo
from codefoundry.errors import UserError


def test_runs_stages_in_order(tmp_path: Path) -> None:
    ran: list[Path] = []

    def make(name: str) -> Callable[[DemoContext], Path]:
        def stage(ctx: DemoContext) -> Path:
            out = ctx.out / name
            out.mkdir()
            ran.append(out)
            return out

        return stage

    statuses = run_demo(DemoConfig(out=tmp_path), [DemoStage("first", make("a")), DemoStage("second", make("b"))])
    assert statuses == ["first: done", "second: done"]
    assert ran == [tmp_path / "a", tmp_path / "b"] and all(p.is_dir() for p in ran)


def test_stage_failure_names_the_stage(tmp_path: Path) -> None:
    def broken(ctx: DemoContext) -> Path:
        raise UserError("no corpus")

    with pytest.raises(UserError, match="demo stage 'x' failed: no corpus"):
        run_demo(DemoConfig(out=tmp_path), [DemoStage("x", broken)])
