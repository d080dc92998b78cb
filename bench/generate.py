"""Generated tokens/s: codefoundry.generate vs transformers' generate on the same GPTBigCode checkpoint.

    .venv/bin/python bench/generate.py                       # small preset, CPU, 1 thread
    .venv/bin/python bench/generate.py --threads 2 --new-tokens 64
    .venv/bin/python bench/generate.py --repeats 3           # best of 3 alternating runs per side (noisy machine)
    .venv/bin/python bench/generate.py --clock cpu           # process CPU time instead of wall time (shared machine)

Both engines run greedy decoding with EOS ignored on the same saved model (codefoundry's
`small` preset, random init with seed 0, float32) and the same prompts: real standard-library
code cut to 24-96 tokens. Two shapes: one request at a time, and 32 requests at once
(transformers: one left-padded batch; codefoundry: continuous batching over the paged cache).
With --repeats N each request group runs N times per side, alternating, and each side's best
time counts. The tokenizer is a byte-level BPE trained here on the standard library (the
model's vocabulary comes from it). Prints tok/s for each and the ratio codefoundry / transformers.
`--clock cpu` times each side by this process's CPU time: with one torch thread that is the
work done, whatever other jobs on a shared machine take from the wall clock.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import GPTBigCodeForCausalLM, load_model, preset, save_pretrained

STDLIB = Path(os.__file__).parent
FILES = ["argparse.py", "json/decoder.py", "textwrap.py", "shutil.py", "functools.py", "heapq.py",
         "difflib.py", "csv.py", "pathlib/__init__.py", "tempfile.py", "glob.py", "fnmatch.py"]


def train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    texts = [(STDLIB / f).read_text() for f in FILES if (STDLIB / f).exists()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def prompts(tokenizer: PreTrainedTokenizerFast, n: int) -> list[list[int]]:
    ids = tokenizer.encode("".join((STDLIB / f).read_text() for f in FILES if (STDLIB / f).exists()))
    out, at = [], 0
    for i in range(n):
        length = 24 + (i * 37) % 73                      # 24..96 tokens, varied
        out.append(ids[at:at + length])
        at += length * 3
    return out


clock = time.perf_counter      # --clock cpu: time.process_time


def time_ours(model, tokenizer, batch: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    start = clock()
    out = generate(model, tokenizer, batch, params)
    return clock() - start, [c.token_ids for c in out]


def time_hf(hf, batch: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
    width = max(map(len, batch))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])            # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    start = clock()
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, eos_token_id=None, pad_token_id=0)
    return clock() - start, out[:, width:].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--single", type=int, default=4, help="requests run one at a time")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each shape per side (best is kept)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time, or this process's CPU time")
    args = ap.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    tokenizer = train_tokenizer(4096)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_pretrained(GPTBigCodeForCausalLM(preset(args.preset, vocab_size=len(tokenizer))), tmp)
        tokenizer.save_pretrained(tmp)
        ours = load_model(tmp).eval()
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        hf.generation_config.eos_token_id = None
    batch = prompts(tokenizer, args.batch)
    print(f"model: {args.preset} preset, {ours.num_parameters() / 1e6:.1f}M params, float32, CPU, "
          f"{args.threads} thread(s), {args.new_tokens} new tokens per request, greedy, {args.clock} clock",
          file=sys.stderr)

    time_ours(ours, tokenizer, batch[:2], 8)                       # warm-up both
    time_hf(hf, batch[:2], 8)
    rows = []
    for name, groups in (("one at a time", [[p] for p in batch[:args.single]]), (f"batch of {args.batch}", [batch])):
        t_ours = t_hf = 0.0
        same = total = 0
        for group in groups:
            t1 = t2 = float("inf")
            for _ in range(args.repeats):                 # alternate the two sides, keep each one's best
                t, a = time_ours(ours, tokenizer, group, args.new_tokens)
                t1 = min(t1, t)
                t, b = time_hf(hf, group, args.new_tokens)
                t2 = min(t2, t)
            t_ours, t_hf = t_ours + t1, t_hf + t2
            same += sum(x == y for x, y in zip(a, b, strict=True))
            total += len(group)
        tokens = sum(len(g) for g in groups) * args.new_tokens
        rows.append((name, tokens / t_ours, tokens / t_hf, same, total))
    print(f"{'shape':<16}{'codefoundry tok/s':>19}{'transformers tok/s':>20}{'ratio':>8}{'same tokens':>13}")
    for name, ours_tps, hf_tps, same, total in rows:
        print(f"{name:<16}{ours_tps:>19.1f}{hf_tps:>20.1f}{ours_tps / hf_tps:>7.2f}x{same:>9}/{total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
