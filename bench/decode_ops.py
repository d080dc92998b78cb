"""ATen ops per decoded token of SmolLM2-135M through `codefoundry.generate` (a load-independent cost measure).

    .venv/bin/python bench/decode_ops.py fp32 int8 int4
    .venv/bin/python bench/decode_ops.py --time fp32 int4     # and batch-1 decode tok/s (CPU clock)

Counts every op `torch.profiler` records in a 12-token greedy `generate` minus a 4-token one,
divided by 8: the per-token dispatch work of the decode hot path, twice — all ops (nested ones
included) and top-level ops only (those called from Python, each one trip through the
dispatcher). On a shared machine these are the before/after figures that timing cannot give.
`--time` adds batch-1 decode tokens/s by process CPU time: a 33-token minus a 1-token `generate`
(prefill excluded), best of 3. To compare with an older tree, run the same command with
`PYTHONPATH=<that tree>/src` (an export of it: `git archive REV src | tar -x -C DIR`).
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from quantize import smollm2_paths


def main() -> None:
    torch.set_num_threads(1)
    _, path = smollm2_paths()
    tok = load_tokenizer(path)
    prompt = tok.encode("def fibonacci(n):\n")
    args = [a for a in sys.argv[1:] if a != "--time"]
    for variant in args or ["fp32", "int4"]:
        model = load_model(path, quantize=None if variant == "fp32" else variant)
        counts, tops = [], []
        for n in (4, 12):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                generate(model, tok, [prompt], SamplingParams(max_new_tokens=n, ignore_eos=True))
            counts.append(sum(e.count for e in prof.key_averages()))
            tops.append(_top_level(prof.events()))
        timed = ""
        if "--time" in sys.argv:
            best = {}
            for n in (1, 33):
                runs = []
                for _ in range(3):
                    start = time.process_time()
                    generate(model, tok, [prompt], SamplingParams(max_new_tokens=n, ignore_eos=True))
                    runs.append(time.process_time() - start)
                best[n] = min(runs)
            timed = f"; batch-1 decode {32 / (best[33] - best[1]):.1f} tok/s (CPU clock)"
        print(f"{variant}: {(counts[1] - counts[0]) / 8:.0f} ATen ops per decoded token, "
              f"{(tops[1] - tops[0]) / 8:.0f} of them top-level{timed}", flush=True)


def _top_level(events) -> int:
    """How many events no other event encloses (one thread: the ranges nest or follow each other)."""
    count, end = 0, -1
    for e in sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end)):
        if e.time_range.start >= end:
            count, end = count + 1, e.time_range.end
    return count


if __name__ == "__main__":
    main()
