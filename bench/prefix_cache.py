"""Time to first token in an IDE-style FIM session, with and without prefix caching, in the same run.

    .venv/bin/python bench/prefix_cache.py                    # small preset (4K positions), CPU, 1 thread
    .venv/bin/python bench/prefix_cache.py --keystrokes 24 --file-tokens 2048 --threads 2

The workload is what llm-ls sends while someone types: the same ~2K-token file on every
request, as a PSM fill-in-the-middle prompt (`<fim_prefix>` text before the cursor
`<fim_suffix>` text after it `<fim_middle>`), the cursor moving one typed character at a time
through a new line at about 70% of the file, one request at a time, 16 new tokens each.
Both engines (`Engine`, prefix caching on / off) live for the whole session and take the
same requests alternately, each keystroke to both; the first keystroke's cold request is left
out of the medians. The anchor beside them is transformers' `generate` on the same weights (no
cache across requests: every keystroke prefills the whole prompt). The model is codefoundry's
`small` preset with n_positions raised to 4096 (the file does not fit in its 1024), random init
with seed 0, float32, and the byte-level BPE of `bench/generate.py` plus the three FIM tokens.
Prints TTFT medians, the ratios, the cache's hit rate, and whether the greedy tokens agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM

from codefoundry.generate import Engine, SamplingParams
from codefoundry.model import GPTBigCodeForCausalLM, load_model, preset, save_pretrained
from generate import FILES, STDLIB, train_tokenizer  # bench/generate.py, beside this script

FIM = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")
TYPED = "        result = self._compute(value, strict=True)\n"


def session(tokenizer, file_tokens: int, keystrokes: int) -> list[list[int]]:
    """One FIM prompt (token ids) per keystroke: the file cut at the cursor, the typed text growing."""
    text = "".join((STDLIB / f).read_text() for f in FILES if (STDLIB / f).exists())
    ids = tokenizer.encode(text)[:file_tokens]
    source = tokenizer.decode(ids)
    cut = source.index("\n", int(len(source) * 0.7)) + 1           # the start of a line at ~70%
    before, after = source[:cut], source[cut:]
    prompts = []
    for k in range(1, keystrokes + 1):
        prefix = before + TYPED[:k % len(TYPED) or len(TYPED)]
        prompts.append(tokenizer.encode(f"{FIM[0]}{prefix}{FIM[1]}{after}{FIM[2]}"))
    return prompts


def first_token(engine: Engine, ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """Seconds from add_request to the first token, and the greedy completion."""
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    start = time.perf_counter()
    engine.add_request("r", ids, params)
    ttft = None
    while engine.has_unfinished():
        for event in engine.step().outputs:
            if ttft is None:
                ttft = time.perf_counter() - start
            if event.completion is not None:
                return ttft, event.completion.token_ids
    raise RuntimeError("the request did not finish")


def first_token_hf(hf, ids: list[int], new_tokens: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        hf.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False, eos_token_id=None, pad_token_id=0)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--n-positions", type=int, default=4096)
    ap.add_argument("--file-tokens", type=int, default=2048)
    ap.add_argument("--keystrokes", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--block-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = train_tokenizer(4096)
    tokenizer.add_special_tokens({"additional_special_tokens": list(FIM)})
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        config = preset(args.preset, vocab_size=len(tokenizer)).replace(n_positions=args.n_positions)
        save_pretrained(GPTBigCodeForCausalLM(config), tmp)
        tokenizer.save_pretrained(tmp)
        model = load_model(tmp).eval()
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    prompts = session(tokenizer, args.file_tokens, args.keystrokes)
    blocks = -(-(max(map(len, prompts)) + args.new_tokens) // args.block_size) * 4
    engines = {on: Engine(model, tokenizer, num_blocks=blocks, block_size=args.block_size, max_batch_tokens=4096,
                          enable_prefix_caching=on) for on in (True, False)}
    print(f"model: {args.preset} preset (n_positions {args.n_positions}), {model.num_parameters() / 1e6:.1f}M params, "
          f"float32, CPU, {args.threads} thread(s); {len(prompts)} keystrokes, prompts of "
          f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens, {args.new_tokens} new tokens each",
          file=sys.stderr)
    first_token(engines[False], prompts[0][:64], 2)                # warm-up (a prompt no keystroke shares)
    first_token_hf(hf, prompts[0][:64], 1)
    ttft: dict[str, list[float]] = {"cache": [], "no cache": [], "transformers": []}
    same = 0
    for ids in prompts:
        t_on, out_on = first_token(engines[True], ids, args.new_tokens)
        t_off, out_off = first_token(engines[False], ids, args.new_tokens)
        ttft["cache"].append(t_on)
        ttft["no cache"].append(t_off)
        ttft["transformers"].append(first_token_hf(hf, ids, 1))
        same += out_on == out_off
    med = {k: statistics.median(v[1:]) for k, v in ttft.items()}        # the first keystroke is cold for both
    stats = engines[True].stats()
    print(f"{'engine':<14}{'TTFT median ms':>16}{'first (cold) ms':>17}{'vs no cache':>13}{'vs transformers':>17}")
    for k, v in ttft.items():
        print(f"{k:<14}{med[k] * 1e3:>16.1f}{v[0] * 1e3:>17.1f}{med['no cache'] / med[k]:>12.2f}x"
              f"{med['transformers'] / med[k]:>16.2f}x")
    print(f"prefix cache hit rate {stats.prefix_cache_hit_rate:.1%} ({stats.prefix_cache_hits} of "
          f"{stats.prefix_cache_queries} prompt tokens); same greedy tokens with and without: {same}/{len(prompts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
