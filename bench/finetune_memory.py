"""Peak memory of one LoRA training step of the demo's fine-tune, by LoRA targets, dropout and trained token rows
(CPU, fp32).

Each setting runs in its own process (peak RSS is per process): load the base, add LoRA, one forward and
backward over the same 8 examples (the demo's micro-batch: `mix` examples of the curated dataset/, padded to
the longest), then print the process's peak RSS and the step's seconds.

    OMP_NUM_THREADS=2 .venv/bin/python bench/finetune_memory.py --base demo-out/base --dataset demo-out/dataset
    … --settings "q/v, dropout 0;q/v, dropout 0, FIM rows (demo now)"

The step's CPU seconds (`cpu_s`, both threads) are printed beside its wall seconds: on a shared machine they move
less with the load.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SETTINGS = {"q/v, dropout 0.05 (old demo)": (None, 0.05, False), "all linear, dropout 0.05": ("all", 0.05, False),
            "all linear, dropout 0": ("all", 0.0, False), "q/v, dropout 0": (None, 0.0, False),
            "q/v, dropout 0, FIM rows (demo now)": (None, 0.0, True)}


def one(base: Path, dataset: Path, targets: str | None, dropout: float, rows: bool) -> dict[str, float]:
    import torch

    from codefoundry.finetune.config import LoraSettings
    from codefoundry.finetune.demo import demo_config
    from codefoundry.finetune.lines import read_documents, request_examples
    from codefoundry.finetune.lora import add_lora, token_ids
    from codefoundry.finetune.train import line_settings
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    config = demo_config(60, 0, ALL_LINEAR if targets == "all" else None)
    tokenizer = load_tokenizer(base)
    docs, _ = read_documents(dataset, 0.05, 0)
    examples = request_examples(docs[:400], tokenizer, line_settings(config), 0)
    from codefoundry.finetune.data import ExampleBatches

    batch = ExampleBatches(examples, 0, tokenizer.eos_token_id).batch(range(8))
    model = add_lora(load_model(base, dtype=torch.float32),
                     LoraSettings(target_modules=config.lora.target_modules, dropout=dropout),
                     token_ids(tokenizer, config.lora.trainable_tokens) if rows else None)
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    loss = model(batch.x, labels=batch.y)
    loss.backward()
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "step_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "tokens": batch.tokens,
            "width": batch.x.shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=Path("demo-out/base"),
                        help="the demo's base/ (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=Path("demo-out/dataset"),
                        help="the demo's curated dataset/ (default: %(default)s)")
    parser.add_argument("--settings", default=None, help="names of SETTINGS to run, joined by ';' (default: all)")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for path in (args.base, args.dataset):
        if not path.is_dir():
            parser.error(f"{path} not found: run `make demo` first, or pass --base and --dataset")
    if args.one:
        targets, dropout, rows = args.one
        print(json.dumps(one(args.base, args.dataset, None if targets == "qv" else targets, float(dropout),
                             rows == "rows")))
        return
    names = args.settings.split(";") if args.settings else list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    print("| LoRA | peak RSS MiB | step s | step CPU s | batch |\n|---|---:|---:|---:|---|", flush=True)
    for name in names:
        targets, dropout, rows = SETTINGS[name]
        out = subprocess.run([sys.executable, __file__, "--base", str(args.base), "--dataset", str(args.dataset),
                              "--one", targets or "qv", str(dropout), "rows" if rows else "-"],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['peak_rss_mib']:,.0f} | {r['step_s']:.1f} | {r['cpu_s']:.1f} | 8 × {r['width']} "
              f"({r['tokens']} tokens) |", flush=True)


if __name__ == "__main__":
    main()
