"""The batched sampler with TGI's and OpenAI's parameters, beside transformers' logits processors (the anchor).

    .venv/bin/python bench/sampler_params.py [--batch 32] [--vocab 49152] [--repeats 20]

Three figures, each a ratio from one run (absolute times on a shared machine are noise):
- greedy: a batch that asks for nothing but greedy decoding, ours against `argmax(log_softmax)`
  (the floor any sampler pays for reporting logprobs): what the per-row parameter checks cost;
- mixed: every row a different mix (repetition and frequency penalties, typical_p, watermark,
  OpenAI penalties), ours in one call against transformers' processors (`RepetitionPenalty`,
  `TypicalLogitsWarper`, `WatermarkLogitsProcessor`) run row by row, as a server without a batched
  sampler would; both then draw from the resulting distribution;
- mixed vs greedy: what the mixed batch costs over the greedy one in our sampler.
"""

from __future__ import annotations

import argparse
import time

import torch

from codefoundry.generate import SamplingParams
from codefoundry.generate.sampler import Sampler, SampleRow

MIXES = [SamplingParams(),
         SamplingParams(repetition_penalty=1.2),
         SamplingParams(frequency_penalty=0.5),
         SamplingParams(do_sample=True, typical_p=0.9),
         SamplingParams(watermark=True),
         SamplingParams(frequency_penalty=0.5, presence_penalty=0.5, openai_penalties=True)]


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def hf_row(processors, ids: torch.Tensor, logits: torch.Tensor) -> int:
    scores = logits
    for p in processors:
        scores = p(ids, scores)
    return int(torch.log_softmax(scores, -1).argmax())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TypicalLogitsWarper,
        WatermarkLogitsProcessor,
    )

    B, V = args.batch, args.vocab
    logits = torch.randn(B, V)
    history = torch.randint(0, V, (B, 200))
    sampler = Sampler()
    greedy_rows = [SampleRow(SamplingParams(), history[i].tolist(), 100) for i in range(B)]
    mixed_rows = [SampleRow(MIXES[i % len(MIXES)], history[i].tolist(), 100, seed=i) for i in range(B)]

    floor = best_of(lambda: torch.log_softmax(logits, -1).argmax(-1).tolist(), args.repeats)
    greedy = best_of(lambda: sampler.sample(logits, greedy_rows), args.repeats)
    mixed = best_of(lambda: sampler.sample(logits, mixed_rows), args.repeats)

    anchors = {0: [], 1: [RepetitionPenaltyLogitsProcessor(1.2)], 2: [RepetitionPenaltyLogitsProcessor(1.2)],
               3: [TypicalLogitsWarper(0.9)], 4: [WatermarkLogitsProcessor(V, "cpu")], 5: []}

    def hf_mixed() -> None:
        for i in range(B):
            hf_row(anchors[i % len(MIXES)], history[i:i + 1], logits[i:i + 1])

    anchor = best_of(hf_mixed, args.repeats)
    print(f"batch {B} x vocab {V}, best of {args.repeats}")
    print(f"greedy batch: ours {greedy * 1e3:.2f} ms, argmax(log_softmax) {floor * 1e3:.2f} ms, "
          f"ratio {greedy / floor:.2f}x")
    print(f"mixed batch: ours {mixed * 1e3:.2f} ms, transformers processors row by row {anchor * 1e3:.2f} ms, "
          f"ratio ours/anchor {mixed / anchor:.2f}x")
    print(f"mixed / greedy in our sampler: {mixed / greedy:.2f}x")


if __name__ == "__main__":
    main()
