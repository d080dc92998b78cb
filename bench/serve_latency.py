"""Request-path latency of `codefoundry serve` vs a bare FastAPI app on uvicorn (what any FastAPI service costs).

    .venv/bin/python bench/serve_latency.py                  # 500 sequential requests per route and server

No generation: GET /info, and a POST /generate that validation refuses (422: tokenized,
then over the token budget), so what is timed is HTTP, the request guard, auth, routing, body
parsing and validation. The anchor: uvicorn (binding its own socket) serving one FastAPI app
whose /info returns the same JSON and whose /generate parses the same body with pydantic and
answers the same 422. Both servers run in this process, on 127.0.0.1, one request at a time
over a keep-alive httpx connection; medians after 50 warm-up requests.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
from codefoundry.serve import ServeConfig, start_in_thread
from codefoundry.serve.schemas import GenerateRequest

_spec = importlib.util.spec_from_file_location("bench_generate", Path(__file__).with_name("generate.py"))
bench_generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_generate)

REFUSED = {"inputs": "def f(x):\n    return x", "parameters": {"max_new_tokens": 100_000, "do_sample": False}}


def bare_app(info: dict) -> FastAPI:
    app = FastAPI()

    @app.get("/info")
    async def get_info() -> dict:
        return info

    @app.post("/generate")
    async def generate(body: GenerateRequest) -> JSONResponse:
        return JSONResponse({"error": "Input validation error: too long", "error_type": "validation"}, 422)

    return app


def start_bare(info: dict) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(bare_app(info), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def median_ms(url: str, n: int, send) -> float:
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(n + 50):
            start = time.perf_counter()
            send(client)
            times.append(time.perf_counter() - start)
    return statistics.median(times[50:]) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tokenizer = bench_generate.train_tokenizer(4096)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_pretrained(GPTBigCodeForCausalLM(preset("tiny", vocab_size=len(tokenizer))), tmp)
        tokenizer.save_pretrained(tmp)
        ours = start_in_thread(ServeConfig(model=Path(tmp), port=0, max_batch_total_tokens=4096,
                                           max_batch_prefill_tokens=256))
    info = httpx.get(ours.url + "/info").json()
    bare, bare_url = start_bare(info)

    def get_info(client: httpx.Client) -> None:
        assert client.get("/info").status_code == 200

    def refused(client: httpx.Client) -> None:
        assert client.post("/generate", json=REFUSED).status_code == 422

    try:
        rows = [(name, median_ms(ours.url, args.requests, send), median_ms(bare_url, args.requests, send))
                for name, send in (("GET /info", get_info), ("POST /generate (422)", refused))]
    finally:
        ours.stop()
        bare.should_exit = True
    print(f"{'route':<24}{'codefoundry ms':>16}{'bare FastAPI ms':>17}{'ratio':>8}", file=sys.stdout)
    for name, a, b in rows:
        print(f"{name:<24}{a:>16.2f}{b:>17.2f}{a / b:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
