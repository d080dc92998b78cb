"""The engine core in its own process: same outputs as the in-process engine, engine calls, cancellation across
the boundary, SIGTERM drain (both processes exit 0), and an engine that dies (503, unhealthy, non-zero exit)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from fixtures_serve import SERVE_API_KEY, wait_until_healthy

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
PROMPTS = ["def fibonacci(n):\n", "import os\nimport sys\n", "#include <stdio.h>\nint main(void) {",
           "package main\n\nfunc add(a, b int) int {", "const express = require('express');\n",
           "for i in range(10):\n    print(i", "class Stack:\n    def __init__(self):\n", "SELECT name FROM"]
NEW_TOKENS = 12
TIE_GAP = 1e-3     # batches of other shapes round differently: compare up to the first top-1/top-2 near-tie
LONG = {"inputs": "def long_function():\n", "parameters": {"max_new_tokens": 400, "do_sample": False, "details": True}}


def _child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc: the engine core is the server's child)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_engine_process_outputs_equal_in_process_engine(tiny_server, tiny_model_dir: Path):
    """Greedy, 8 concurrent requests through the engine process == `generate()` in this process."""
    from codefoundry.generate import SamplingParams, generate
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    assert tiny_server.state.config.engine_process and tiny_server.state.engine_loop.pid != os.getpid()

    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=tiny_server.url, headers=AUTH, timeout=120) as client:
            body = lambda p: {"inputs": p, "parameters": {"max_new_tokens": NEW_TOKENS, "do_sample": False,  # noqa: E731
                                                          "details": True, "top_n_tokens": 2}}
            replies = await asyncio.gather(*(client.post("/generate", json=body(p)) for p in PROMPTS))
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        return [r.json() for r in replies]

    served = asyncio.run(run())
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir).eval()
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    local = generate(model, tokenizer, ids, SamplingParams(max_new_tokens=NEW_TOKENS))
    compared = 0
    for i, (s, c) in enumerate(zip(served, local, strict=True)):
        tokens = s["details"]["tokens"]
        gaps = [t[0]["logprob"] - t[1]["logprob"] for t in s["details"]["top_tokens"]]
        n = next((k for k, g in enumerate(gaps) if g < TIE_GAP), len(gaps))
        assert [t["id"] for t in tokens][:n] == c.token_ids[:n], f"prompt {i} differs before any near-tie"
        if n == len(gaps):
            assert s["generated_text"] == c.text
            assert [t["logprob"] for t in tokens] == pytest.approx(c.logprobs, abs=1e-4)
            compared += 1
    assert compared >= 4, "too many near-ties: nothing was compared in full"


def test_engine_call_runs_in_engine_process_and_raises_its_errors(tiny_server):
    """`await client.call(method, *args)`: an Engine method run in the engine process, its result as plain data,
    its exception raised here."""
    client = tiny_server.state.engine_loop
    call = lambda method, *args: asyncio.run(client.call(method, *args))  # noqa: E731
    stats = call("stats")
    assert stats["num_blocks"] * stats["block_size"] == tiny_server.state.info.max_batch_total_tokens
    assert call("has_unfinished") is False
    assert call("abort", 12345) is False                        # not queued there
    with pytest.raises(TypeError):
        call("abort")                                           # missing its argument: the engine's TypeError
    with pytest.raises(AttributeError, match="private"):
        call("_states")
    with pytest.raises(AttributeError):
        call("no_such_method")
    with pytest.raises(TypeError):
        call("kv")                                              # not plain data: an error, not a hang
    assert call("has_unfinished") is False                      # the engine serves on


def test_engine_process_cancel_frees_blocks_in_engine(tiny_server):
    """A client that leaves mid-stream: its request is aborted in the engine process, whose pool is empty again."""
    client = tiny_server.state.engine_loop
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=60) as http, \
            http.stream("POST", "/generate_stream", json=LONG) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data:")
        assert asyncio.run(client.call("stats"))["num_used_blocks"] > 0
    deadline = time.monotonic() + 15
    while asyncio.run(client.call("stats"))["num_used_blocks"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = asyncio.run(client.call("stats"))
    assert stats["num_used_blocks"] == 0 and stats["num_running"] == 0 and stats["num_waiting"] == 0


def test_engine_process_killed_server_unhealthy_requests_fail(tiny_model_dir: Path):
    """SIGKILL the engine process under a stream: the stream ends with a 503 error event, /health says 503,
    new requests get 503 at once (a server on a thread stays up to say so; `codefoundry serve` exits, below)."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, max_batch_total_tokens=2048))
    try:
        url, pid = running.url, running.state.engine_loop.pid
        assert httpx.get(url + "/health").status_code == 200
        with httpx.stream("POST", url + "/generate_stream", json=LONG, timeout=30) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data:")
            os.kill(pid, signal.SIGKILL)
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
        assert events[-1]["error_type"] == "engine_unavailable" and "SIGKILL" in events[-1]["error"]
        assert httpx.get(url + "/health").status_code == 503
        r = httpx.post(url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}}, timeout=10)
        assert r.status_code == 503 and r.json()["error_type"] == "engine_unavailable"
    finally:
        running.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cli(model: Path, tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODEFOUNDRY_API_KEY": SERVE_API_KEY}
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "codefoundry"), "serve", "--model", str(model),
                                 "--port", str(port), "--max-batch-total-tokens", "2048"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, url, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, url, log


@pytest.mark.slow
def test_cli_sigterm_drains_then_server_and_engine_exit_0(tiny_model_dir: Path, tmp_path: Path):
    proc, url, log = _start_cli(tiny_model_dir, tmp_path)
    try:
        [engine] = _child_pids(proc.pid)
        body = {**LONG, "parameters": {**LONG["parameters"], "max_new_tokens": 200}}
        with httpx.stream("POST", url + "/generate_stream", json=body, headers=AUTH, timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data:")
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            refused = httpx.post(url + "/generate", json={"inputs": "x"}, headers=AUTH, timeout=5)
            assert refused.status_code == 503 and refused.json()["error_type"] == "shutting_down"
            assert _alive(engine)                                # the engine keeps serving the drain
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
        assert events[-1]["details"]["generated_tokens"] == 200
        assert proc.wait(timeout=60) == 0, log.read_text()      # 0 only if the engine process exited 0 too
        assert not _alive(engine)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_engine_killed_fails_stream_and_exits_nonzero(tiny_model_dir: Path, tmp_path: Path):
    proc, url, log = _start_cli(tiny_model_dir, tmp_path)
    try:
        [engine] = _child_pids(proc.pid)
        events: list[dict] = []

        def stream() -> None:
            with httpx.stream("POST", url + "/generate_stream", json=LONG, headers=AUTH, timeout=60) as r:
                events.extend(json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:"))

        reader = threading.Thread(target=stream)
        reader.start()
        while not events:
            time.sleep(0.02)
            assert reader.is_alive() or events
        os.kill(engine, signal.SIGKILL)
        killed = time.monotonic()
        code = proc.wait(timeout=30)
        reader.join(timeout=10)
        assert code != 0
        assert time.monotonic() - killed < 30
        assert events[-1]["error_type"] == "engine_unavailable"
        assert "error: the engine process died (killed by SIGKILL)" in " ".join(log.read_text().split())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_engine_process_start_up_failure_is_one_error_line(tiny_model_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A model the engine process cannot load: `codefoundry serve` exits 1 with one `error:` line, no traceback."""
    import shutil

    from codefoundry.cli import run

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert run(["serve", "--model", str(broken), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err.split("error:", 1)[1]
