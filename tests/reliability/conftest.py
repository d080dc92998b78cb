"""Fixtures of the reliability suite: artifacts the stages under test start from, built once per session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fixtures_serve import TINY_CHAT_TEMPLATE


@pytest.fixture(scope="session")
def soak_model_dir(build_once, tiny_model_dir: Path) -> Path:
    """The tiny model with a chat template (it has none), so that every route, chat included, can answer."""

    def build(out: Path) -> None:
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        config = json.loads((out / "tokenizer_config.json").read_text())
        (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TINY_CHAT_TEMPLATE}))

    return build_once("reliability_chat_model", build)
