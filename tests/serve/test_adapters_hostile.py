"""Run-time adapter loading with paths no file system takes: a 4xx JSON error, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, api_key=KEY,
                                          adapter_root=tmp_path_factory.mktemp("adapter-root"),
                                          max_batch_total_tokens=2048, max_batch_prefill_tokens=256))
    yield running
    running.stop()


@pytest.mark.parametrize("path", ["a\u0000b", "x" * 5000, "deep/" * 2000 + "a"], ids=["nul", "long-name", "long-path"])
def test_unusable_adapter_path_is_422(server, path: str) -> None:
    response = httpx.post(server.url + "/v1/adapters", headers=AUTH, json={"name": "mine", "path": path}, timeout=30)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_type"] == "validation" and "adapter path" in body["error"]
    assert len(body["error"]) < 600  # the 5000-character name is not echoed whole
    assert httpx.get(server.url + "/v1/adapters", headers=AUTH).json()["data"] == []
