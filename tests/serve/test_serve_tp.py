"""`codefoundry serve --tp 2`: the model sharded over 2 processes (gloo on CPU), the engine on rank 0; the same API
and the same greedy outputs as `--tp 1` (GPTBigCode, Llama; SmolLM2's real weights, marked slow); the worker ranks
leave with the server; what it cannot shard is one `error:` line at start-up."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def _start(model_dir: Path, log_path: Path, *args: str) -> tuple[str, subprocess.Popen]:
    """`codefoundry serve --model model_dir *args` on a free port, healthy."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODEFOUNDRY_API_KEY": SERVE_API_KEY}
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "codefoundry"), "serve", "--model",
                                 str(model_dir), "--port", str(port), *args,
                                 "--max-batch-total-tokens", "16384", "--max-batch-prefill-tokens", "1024"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, url, log_path, timeout=600)     # 3 interpreters start one after another
    except BaseException:
        proc.kill()
        raise
    return url, proc


@contextmanager
def _serving(model_dir: Path, log_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    url, proc = _start(model_dir, log_path, *args)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.fixture(scope="module")
def tp2_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[str, subprocess.Popen]]:
    with _serving(tiny_model_dir, tmp_path_factory.mktemp("tp2") / "serve.log", "--tp", "2") as running:
        yield running


def _generate_all(url: str, prompts: list[str] = PROMPTS) -> list[dict]:
    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=300) as client:
            body = lambda p: {"inputs": p, "parameters": {"max_new_tokens": NEW_TOKENS, "do_sample": False,  # noqa: E731
                                                          "details": True, "top_n_tokens": 2}}
            replies = await asyncio.gather(*(client.post("/generate", json=body(p)) for p in prompts))
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        return [r.json() for r in replies]

    return asyncio.run(run())


def test_tp2_gives_the_greedy_outputs_of_tp1(tp2_server, tiny_server) -> None:
    url, proc = tp2_server
    assert len(_descendants(proc.pid)) >= 2                     # the engine core and the rank-1 worker
    assert_same_greedy(_generate_all(url), _generate_all(tiny_server.url), least=4)
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


def _greedy_in_process(model_dir: Path, prompts: list[str]) -> list[dict]:
    """What `--tp 1` answers (the engine on the whole model), in the shape of /generate's details."""
    from codefoundry.generate import SamplingParams, generate
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    done = generate(load_model(model_dir), load_tokenizer(model_dir), prompts,
                    SamplingParams(max_new_tokens=NEW_TOKENS, top_n_tokens=2))
    return [{"generated_text": c.text,
             "details": {"tokens": [{"id": i, "logprob": lp} for i, lp in zip(c.token_ids, c.logprobs, strict=True)],
                         "top_tokens": [[{"logprob": t.top_tokens[0][1]}, {"logprob": t.top_tokens[1][1]}]
                                        for t in c.tokens]}} for c in done]


def assert_same_greedy(sharded: list[dict], whole: list[dict], least: int) -> None:
    """Same tokens up to the first top-1/top-2 near-tie of `whole`; text and log-probs too for at least `least`
    prompts without one."""
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
    assert compared >= least, "too many near-ties: nothing was compared in full"


def test_llama_at_tp2_gives_the_greedy_outputs_of_tp1(lora_bases: dict[str, Path], tmp_path: Path) -> None:
    """A random Llama with grouped-query attention (4 query heads, 2 K/V heads: one group per rank)."""
    model_dir = lora_bases["llama"]
    with _serving(model_dir, tmp_path / "serve.log", "--tp", "2") as (url, proc):
        assert len(_descendants(proc.pid)) >= 2
        sharded = _generate_all(url)
        # the adapter routes answer as at --tp 1 without --adapter-root (which --tp refuses): none loaded, 403
        assert httpx.get(url + "/v1/adapters", headers=AUTH).json()["data"] == []
        refused = httpx.post(url + "/v1/adapters", headers=AUTH, json={"name": "a", "path": "a"})
        assert refused.status_code == 403 and "--adapter-root" in refused.json()["error"]
    assert_same_greedy(sharded, _greedy_in_process(model_dir, PROMPTS), least=4)


@pytest.mark.slow
def test_smollm2_at_tp2_gives_the_greedy_outputs_of_tp1(smollm2_dir: Path, tmp_path: Path) -> None:
    """Real weights: 9 query heads in 3 groups, split 6 + 3 over the two ranks."""
    prompts = PROMPTS[:4]
    with _serving(smollm2_dir, tmp_path / "serve.log", "--tp", "2") as (url, _):
        sharded = _generate_all(url, prompts)
    assert_same_greedy(sharded, _greedy_in_process(smollm2_dir, prompts), least=2)


def test_tp_refuses_what_it_cannot_shard(tiny_model_dir: Path, lora_bases: dict[str, Path], tmp_path: Path) -> None:
    from codefoundry.errors import UserError
    from codefoundry.serve import ServeConfig
    from codefoundry.serve.engine_builder import build_engine

    with pytest.raises(UserError, match="--tp 2 with LoRA adapters"):
        build_engine(ServeConfig(model=tiny_model_dir, tp=2, adapter_root=tmp_path))
    with pytest.raises(UserError, match="--tp 3 does not divide the model's 4 attention heads"):
        build_engine(ServeConfig(model=tiny_model_dir, tp=3))
    with pytest.raises(UserError, match=r"--tp 3 does not divide the model's 4 attention heads \(2 key/value"):
        build_engine(ServeConfig(model=lora_bases["llama"], tp=3))
    # 4 ranks: 16 of o_proj's 64 input features each, half an int4 group (--tp 2 keeps whole groups: served)
    with pytest.raises(UserError, match=r"--tp 4 with --quantize int4: rank 0's shard of model.layers.0.self_attn"):
        build_engine(ServeConfig(model=lora_bases["llama"], tp=4, quantize="int4"))


def test_tp_refusal_is_one_error_line(lora_bases: dict[str, Path], tmp_path: Path) -> None:
    """At the command line: `error: …`, exit status 1, no traceback, checked before any process starts."""
    cli = str(Path(sys.executable).parent / "codefoundry")
    proc = subprocess.run([cli, "serve", "--model", str(lora_bases["llama"]), "--port", str(_free_port()), "--tp", "4",
                           "--quantize", "int4", "--adapter-root", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --tp 4 with LoRA adapters"), proc.stderr
    # a named adapter too (not only a run-time --adapter-root): refused before any rank starts
    (tmp_path / "adapter").mkdir()
    proc = subprocess.run([cli, "serve", "--model", str(lora_bases["llama"]), "--port", str(_free_port()), "--tp", "2",
                           "--adapter", f"code={tmp_path / 'adapter'}"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: --tp 2 with LoRA adapters") and "merge" in proc.stderr, proc.stderr
    proc = subprocess.run([cli, "serve", "--model", str(lora_bases["llama"]), "--port", str(_free_port()), "--tp", "4",
                           "--quantize", "int4"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "does not fall on int4 groups of 32" in lines[0], proc.stderr


def test_tp_refusal_of_a_q4_gguf_names_its_own_int4(lora_bases: dict[str, Path], tmp_path: Path) -> None:
    """A Q4 GGUF is served int4 without --quantize: a --tp that cuts its groups names the file's own int4 and the
    flags that serve it (not a `--quantize int4` the user never passed); `--quantize none` passes the check."""
    from codefoundry.generate import check_tp_serving
    from codefoundry.model.gguf_export import export_gguf
    from codefoundry.serve.config import ServeConfig

    gguf_file = export_gguf(lora_bases["llama"], tmp_path / "llama.Q4_0.gguf", "q4_0")
    cfg = ServeConfig(model=gguf_file, tp=4)
    assert cfg.served_quantize == "int4" and cfg.file_int4
    cli = str(Path(sys.executable).parent / "codefoundry")
    proc = subprocess.run([cli, "serve", "--model", str(gguf_file), "--port", str(_free_port()), "--tp", "4"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: --tp 4 with the model file's own int4 weights"), proc.stderr
    assert "--quantize int4" not in proc.stderr and "--quantize none" in proc.stderr, proc.stderr
    check_tp_serving(gguf_file, 4, ServeConfig(model=gguf_file, tp=4, quantize="none").served_quantize)
