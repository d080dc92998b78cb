"""Generated tokens/s through `codefoundry serve` (HTTP, continuous batching) vs transformers' generate.

    .venv/bin/python bench/serve.py                            # small preset, CPU, 1 thread
    .venv/bin/python bench/serve.py --threads 2 --new-tokens 64
    .venv/bin/python bench/serve.py --clock cpu                # process CPU time instead of wall time

Same checkpoint (codefoundry's `small` preset, random init with seed 0, float32), tokenizer
and prompts as bench/generate.py. codefoundry: a real server on 127.0.0.1 (in this process,
its engine on a background thread), greedy requests to /generate one at a time, then 32 at
once over concurrent HTTP connections. transformers: `generate` one prompt at a time, then
one left-padded static batch of 32. Tokens counted are the tokens each side generated
(the server reports x-generated-tokens; transformers is forced to --new-tokens). Also
prints the server's mean time to first token under the 32-request load (wall time). With
`--clock cpu` throughput is timed by this process's CPU time, which also counts the HTTP
clients (they run in this process): the work done, whatever a shared machine's other jobs take.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from transformers import AutoModelForCausalLM

from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
from codefoundry.serve import ServeConfig, start_in_thread

_spec = importlib.util.spec_from_file_location("bench_generate", Path(__file__).with_name("generate.py"))
bench_generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_generate)


async def _post_all(url: str, prompts: list[str], new_tokens: int) -> tuple[float, int, list[float]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(prompt: str) -> tuple[int, float]:
            start = time.perf_counter()
            body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "do_sample": False}}
            async with client.stream("POST", "/generate_stream", json=body) as r:
                first = None
                n = 0
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        n += 1
                        first = first or time.perf_counter() - start
            return n, first or 0.0

        start = bench_generate.clock()
        results = await asyncio.gather(*(one(p) for p in prompts))
        return bench_generate.clock() - start, sum(n for n, _ in results), [f for _, f in results]


def time_server_single(url: str, prompts: list[str], new_tokens: int) -> tuple[float, int]:
    total, tokens = 0.0, 0
    with httpx.Client(base_url=url, timeout=600) as client:
        for p in prompts:
            start = bench_generate.clock()
            r = client.post("/generate", json={"inputs": p, "parameters": {"max_new_tokens": new_tokens,
                                                                             "do_sample": False}})
            total += bench_generate.clock() - start
            r.raise_for_status()
            tokens += int(r.headers["x-generated-tokens"])
    return total, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--single", type=int, default=4, help="requests sent one at a time")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time, or this process's CPU time")
    args = ap.parse_args()
    bench_generate.clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    tokenizer = bench_generate.train_tokenizer(4096)
    batch_ids = bench_generate.prompts(tokenizer, args.batch)
    prompts = [tokenizer.decode(ids) for ids in batch_ids]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_pretrained(GPTBigCodeForCausalLM(preset(args.preset, vocab_size=len(tokenizer))), tmp)
        tokenizer.save_pretrained(tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        hf.generation_config.eos_token_id = None
        server = start_in_thread(ServeConfig(model=Path(tmp), port=0, max_batch_prefill_tokens=2048,
                                             max_batch_total_tokens=args.batch * (128 + args.new_tokens) + 1024))
    try:
        print(f"model: {args.preset} preset, float32, CPU, {args.threads} thread(s), {args.new_tokens} new tokens "
              f"per request, greedy, {args.clock} clock; server at {server.url}", file=sys.stderr)
        time_server_single(server.url, prompts[:1], 8)                     # warm-up both
        bench_generate.time_hf(hf, batch_ids[:1], 8)
        t, n = time_server_single(server.url, prompts[:args.single], args.new_tokens)
        h = sum(bench_generate.time_hf(hf, [ids], args.new_tokens)[0] for ids in batch_ids[:args.single])
        single = (n / t, args.single * args.new_tokens / h)
        t, n, ttft = asyncio.run(_post_all(server.url, prompts, args.new_tokens))
        h = bench_generate.time_hf(hf, batch_ids, args.new_tokens)[0]
        many = (n / t, args.batch * args.new_tokens / h)
    finally:
        server.stop()
    print(f"{'shape':<22}{'codefoundry serve tok/s':>25}{'transformers tok/s':>20}{'ratio':>8}")
    for name, (ours, theirs) in ((f"one at a time ({args.single})", single), (f"{args.batch} concurrent", many)):
        print(f"{name:<22}{ours:>25.1f}{theirs:>20.1f}{ours / theirs:>7.2f}x")
    print(f"server time to first token with {args.batch} concurrent: mean {sum(ttft) / len(ttft) * 1000:.0f} ms, "
          f"max {max(ttft) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
