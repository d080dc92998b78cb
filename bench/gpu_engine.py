"""codefoundry.generate on a CUDA GPU beside transformers: greedy parity, tokens/s, attention kernels.

    python bench/gpu_engine.py                       # on a machine with a CUDA GPU
    python bench/gpu_engine.py --device cpu --layers 2 --new-tokens 16    # a quick check of the script itself

The model is SmolLM2-135M's architecture (Llama: 30 layers, 576 wide, 9 query and 3 key/value
heads, random init with seed 0; weights cannot be fetched here) saved by transformers, loaded by
both sides from the same directory. For each dtype (float32 with TF32 off, bfloat16):
- parity: 8 prompts of mixed length decoded greedily in one batch by our engine and one at a
  time by transformers; tokens compared up to the first near-tie (top-1/top-2 logit gap < 1e-3
  in float32; 1e-2 in bfloat16, whose logits carry 8 bits of mantissa);
- speed: one request at a time and 32 at once (ours: continuous batching over the paged cache;
  transformers: one left-padded static batch), generated tokens/s and the ratio;
- kernels: the CUDA kernels of one batched decode step by self time, so the attention kernel
  that scaled_dot_product_attention picked (flash, memory-efficient or math) can be read off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))      # bench/generate.py: the same tokenizer and prompts
from codefoundry.generate import SamplingParams, generate
from codefoundry.model import load_model
from generate import prompts, train_tokenizer

NEAR_TIE = {torch.float32: 1e-3, torch.bfloat16: 1e-2}


def smollm2_shape(vocab_size: int, layers: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                       rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0,
                       eos_token_id=0)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ours_run(model, tokenizer, batch: list[list[int]], new_tokens: int, device: str) -> tuple[float, list]:
    sync(device)
    start = time.perf_counter()
    out = generate(model, tokenizer, batch, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True))
    sync(device)
    return time.perf_counter() - start, [c.token_ids for c in out]


def hf_run(hf, batch: list[list[int]], new_tokens: int, device: str, scores: bool = False):
    width = max(map(len, batch))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in batch], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=scores,
                          return_dict_in_generate=True)
    sync(device)
    return time.perf_counter() - start, out.sequences[:, width:].tolist(), out.scores


def parity(ours_ids: list[list[int]], hf_rows: list[tuple[list[int], tuple]], tie: float) -> tuple[int, int, int]:
    """(requests identical up to their first near-tie, tokens compared, tokens identical)."""
    agree = compared = same = 0
    for mine, (theirs, step_scores) in zip(ours_ids, hf_rows, strict=True):
        limit = len(theirs)
        for t, s in enumerate(step_scores):
            top = s[0].float().topk(2).values
            if float(top[0] - top[1]) < tie:
                limit = t
                break
        first_diff = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b), len(theirs))
        agree += first_diff >= limit
        compared += limit
        same += min(first_diff, limit)
    return agree, compared, same


def kernel_table(model, tokenizer, batch: list[list[int]], device: str, top: int = 8) -> str:
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        ours_run(model, tokenizer, batch, 4, device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=70)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default when there is one), or cpu to check the script")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--single", type=int, default=4, help="requests timed one at a time")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print("gpu_engine: no CUDA device here, nothing measured (run it on a GPU; --device cpu checks the script)")
        return 0
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    tokenizer = train_tokenizer(4096)
    batch = prompts(tokenizer, args.batch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        LlamaForCausalLM(smollm2_shape(len(tokenizer), args.layers)).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in args.dtypes.split(","):
            dtype = getattr(torch, name)
            ours = load_model(tmp, dtype=dtype, device=device).eval()
            hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).to(device).eval()
            hf.generation_config.eos_token_id = None
            ours_run(ours, tokenizer, batch[:2], 8, device)                     # warm-up both
            hf_run(hf, batch[:2], 8, device)

            _, mine = ours_run(ours, tokenizer, batch[:8], args.new_tokens, device)
            theirs = [hf_run(hf, [p], args.new_tokens, device, scores=True)[1:] for p in batch[:8]]
            theirs = [(ids[0], tuple(s[0:1] for s in sc)) for ids, sc in theirs]
            agree, compared, same = parity(mine, theirs, NEAR_TIE[dtype])
            print(f"{name} parity: {agree}/8 requests identical up to their first near-tie "
                  f"({same}/{compared} tokens compared)", flush=True)

            for shape, groups in (("one at a time", [[p] for p in batch[:args.single]]),
                                  (f"{args.batch} at once", [batch])):
                t_ours = sum(ours_run(ours, tokenizer, g, args.new_tokens, device)[0] for g in groups)
                t_hf = sum(hf_run(hf, g, args.new_tokens, device)[0] for g in groups)
                tokens = sum(map(len, groups)) * args.new_tokens
                rows.append((name, shape, tokens / t_ours, tokens / t_hf))
                print(f"{name} {shape}: ours {tokens / t_ours:.1f} tok/s, transformers {tokens / t_hf:.1f} tok/s, "
                      f"ratio {t_hf / t_ours:.2f}x", flush=True)
            print(f"{name}: kernels of a batched decode (4 steps, {len(batch)} requests)")
            print(kernel_table(ours, tokenizer, batch, device), flush=True)
            del ours, hf
    print(f"\n{'dtype':<10}{'shape':<16}{'codefoundry tok/s':>19}{'transformers tok/s':>20}{'ratio':>8}")
    for name, shape, a, b in rows:
        print(f"{name:<10}{shape:<16}{a:>19.1f}{b:>20.1f}{a / b:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
