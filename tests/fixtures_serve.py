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
def smollm2_server(smollm2_dir: Path) -> Iterator:
    """`codefoundry.serve` on SmolLM2-135M-Instruct (real weights, its own chat template): API key `SERVE_API_KEY`."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=smollm2_dir, port=0, api_key=SERVE_API_KEY,
                                          max_batch_total_tokens=4096, max_batch_prefill_tokens=1024))
    yield running
    running.stop()


# A template that refuses a conversation whose roles do not alternate, as Llama 2's and Mistral's do.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_server(build_once, tiny_model_dir: Path) -> Iterator:
    """The tiny model given `TINY_CHAT_TEMPLATE` (it has none of its own), served with API key `SERVE_API_KEY`."""
    import json
    import shutil

    from codefoundry.serve import ServeConfig, start_in_thread

    def build(out: Path) -> None:
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        config = json.loads((out / "tokenizer_config.json").read_text())
        (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TINY_CHAT_TEMPLATE}))

    running = start_in_thread(ServeConfig(model=build_once("tiny_chat_model", build), port=0, api_key=SERVE_API_KEY,
                                          max_batch_total_tokens=2048, max_batch_prefill_tokens=256))
    yield running
    running.stop()


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
