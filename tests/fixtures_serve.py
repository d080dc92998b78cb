"""Fixtures of the serve stage: one real server (HTTP on 127.0.0.1, engine thread) per test session."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SERVE_API_KEY = "test-key"


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path) -> Iterator:
    """`codefoundry.serve` on the tiny model: API key `SERVE_API_KEY`, a 16K-token KV pool, free port."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, api_key=SERVE_API_KEY,
                                          max_batch_total_tokens=16384, max_batch_prefill_tokens=1024))
    yield running
    running.stop()


def wait_until_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    """Block until the `codefoundry serve` subprocess `proc` answers /health with 200 (its log on failure)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.2)
