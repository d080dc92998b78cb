"""ATen ops per decoded token of SmolLM2-135M through `codefoundry.generate` (a load-independent cost measure).

    .venv/bin/python bench/decode_ops.py fp32 int8 int4

Counts every op `torch.profiler` records in a 12-token greedy `generate` minus a 4-token one,
divided by 8: the per-token dispatch work of the decode hot path, twice — all ops (nested ones
included) and top-level ops only (those called from Python, each one trip through the
dispatcher). On a shared machine these are the before/after figures that timing cannot give.
"""

from __future__ import annotations

import sys

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
    for variant in sys.argv[1:] or ["fp32", "int4"]:
        model = load_model(path, quantize=None if variant == "fp32" else variant)
        counts, tops = [], []
        for n in (4, 12):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                generate(model, tok, [prompt], SamplingParams(max_new_tokens=n, ignore_eos=True))
            counts.append(sum(e.count for e in prof.key_averages()))
            tops.append(_top_level(prof.events()))
        print(f"{variant}: {(counts[1] - counts[0]) / 8:.0f} ATen ops per decoded token, "
              f"{(tops[1] - tops[0]) / 8:.0f} of them top-level", flush=True)


def _top_level(events) -> int:
    """How many events no other event encloses (one thread: the ranges nest or follow each other)."""
    count, end = 0, -1
    for e in sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end)):
        if e.time_range.start >= end:
            count, end = count + 1, e.time_range.end
    return count


if __name__ == "__main__":
    main()
