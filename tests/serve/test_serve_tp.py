"""`codefoundry serve --tp 2`: the model sharded over 2 processes (gloo on CPU), the engine on rank 0; the same API
and the same greedy outputs as `--tp 1`; the worker ranks leave with the server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fixtures_serve import SERVE_API_KEY, wait_until_healthy

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
PROMPTS = ["def fibonacci(n):\n", "import os\nimport sys\n", "#include <stdio.h>\nint main(void) {",
           "package main\n\nfunc add(a, b int) int {", "const express = require('express');\n",
           "for i in range(10):\n    print(i", "SELECT name FROM", "class Stack:\n    def __init__(self):\n" * 6]
NEW_TOKENS = 12
TIE_GAP = 1e-3     # sharded sums round differently: compare up to the first top-1/top-2 near-tie


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Live processes below `pid` (from /proc): the engine core and its worker ranks."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] != "Z":
                children.setdefault(int(stat[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture(scope="module")
def tp2_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[str, subprocess.Popen]]:
    port, log_path = _free_port(), tmp_path_factory.mktemp("tp2") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODEFOUNDRY_API_KEY": SERVE_API_KEY}
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "codefoundry"), "serve", "--model",
                                 str(tiny_model_dir), "--port", str(port), "--tp", "2",
                                 "--max-batch-total-tokens", "16384", "--max-batch-prefill-tokens", "1024"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, url, log_path, timeout=600)     # 3 interpreters start one after another
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _generate_all(url: str) -> list[dict]:
    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as client:
            body = lambda p: {"inputs": p, "parameters": {"max_new_tokens": NEW_TOKENS, "do_sample": False,  # noqa: E731
                                                          "details": True, "top_n_tokens": 2}}
            replies = await asyncio.gather(*(client.post("/generate", json=body(p)) for p in PROMPTS))
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        return [r.json() for r in replies]

    return asyncio.run(run())


def test_tp2_gives_the_greedy_outputs_of_tp1(tp2_server, tiny_server) -> None:
    url, proc = tp2_server
    assert len(_descendants(proc.pid)) >= 2                     # the engine core and the rank-1 worker
    sharded, whole = _generate_all(url), _generate_all(tiny_server.url)
    compared = 0
    for i, (s, w) in enumerate(zip(sharded, whole, strict=True)):
        gaps = [t[0]["logprob"] - t[1]["logprob"] for t in w["details"]["top_tokens"]]
        n = next((k for k, g in enumerate(gaps) if g < TIE_GAP), len(gaps))
        assert [t["id"] for t in s["details"]["tokens"]][:n] == [t["id"] for t in w["details"]["tokens"]][:n], \
            f"prompt {i} differs before any near-tie"
        if n == len(gaps):
            assert s["generated_text"] == w["generated_text"]
            assert [t["logprob"] for t in s["details"]["tokens"]] == pytest.approx(
                [t["logprob"] for t in w["details"]["tokens"]], abs=1e-4)
            compared += 1
    assert compared >= 4, "too many near-ties: nothing was compared in full"
    # the OpenAI route, streaming, through the same sharded engine
    with httpx.stream("POST", url + "/v1/completions", headers=AUTH, timeout=60,
                      json={"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 4, "stream": True}) as r:
        assert r.status_code == 200
        assert "[DONE]" in r.read().decode()


def test_tp2_server_stops_with_its_workers(tp2_server) -> None:
    _, proc = tp2_server
    below = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    deadline = time.monotonic() + 30
    while any(_running(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in below if _running(p)], "a worker rank outlived the server"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_tp_refuses_what_it_cannot_shard(tiny_model_dir: Path, tmp_path: Path) -> None:
    from codefoundry.errors import UserError
    from codefoundry.serve import ServeConfig
    from codefoundry.serve.engine_builder import build_engine

    with pytest.raises(UserError, match="--tp 2 with --quantize is not supported"):
        build_engine(ServeConfig(model=tiny_model_dir, tp=2, quantize="int8"))
    with pytest.raises(UserError, match="--tp 2 with LoRA adapters"):
        build_engine(ServeConfig(model=tiny_model_dir, tp=2, adapter_root=tmp_path))
    with pytest.raises(UserError, match="--tp 3 does not divide the model's 4 attention heads"):
        build_engine(ServeConfig(model=tiny_model_dir, tp=3))
