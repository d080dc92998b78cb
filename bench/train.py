"""Training: throughput of codefoundry's loop vs transformers' Trainer, and what FIM training buys.

    .venv/bin/python bench/train.py throughput           # small preset, seq 256, batch 8, 12 steps, CPU
    .venv/bin/python bench/train.py throughput --steps 30 --seq-len 512
    .venv/bin/python bench/train.py fim                  # FIM exact match, trained with vs without FIM

Both train a GPTBigCode model of the `small` preset's shape (codefoundry's own module vs
transformers' GPTBigCodeForCausalLM under `Trainer`) on the same FIM-permuted samples of the
same packed tokens (Python stdlib code, tokenized with an 8K BPE trained here), with the same
AdamW/cosine/clipping settings. Reports median tokens/s over the steps after the first two.

`fim`: a tiny model is trained on templated functions (one per file) with FIM (rate 0.5, SPM
0.5) and, for the same steps, without; each then fills the masked body of 100 held-out
functions (name/operation pairs never seen) from a PSM prompt, greedy, via codefoundry.generate.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from codefoundry.manifest import write_manifest
from codefoundry.train import PackConfig, TrainConfig, pack, train

STDLIB = Path(os.__file__).parent


def make_inputs(root: Path) -> tuple[Path, Path]:
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    files = sorted(STDLIB.glob("*.py"))[:120]
    rows = [{"content": f.read_text(encoding="utf-8", errors="replace"), "lang": "Python", "path": f.name,
             "repo_name": f"stdlib/{f.stem}", "stars": 0, "size": f.stat().st_size, "ext": "py"} for f in files]
    (root / "ds" / "data" / "files").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "ds" / "data" / "files" / "part-00000.parquet")
    write_manifest(root / "ds", "dataset", {"source": "stdlib"}, seed=0)
    tok = train_tokenizer(root / "ds", root / "tok", TokenizerTrainConfig(vocab_size=8192, byte_budget=5_000_000))
    return root / "ds", tok


def ours(tokens: Path, tok: Path, out: Path, args: argparse.Namespace) -> float:
    cfg = TrainConfig(preset=args.preset, seq_len=args.seq_len, micro_batch_size=args.micro_batch, max_steps=args.steps,
                      eval_interval=10**6, checkpoint_interval=10**6, warmup_steps=2)
    train(out, tok, tokens=tokens, config=cfg)
    rates = [json.loads(line)["tokens_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(rates[2:])


def hf_trainer(tokens: Path, tok_dir: Path, out: Path, args: argparse.Namespace) -> float:
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from codefoundry.model import preset
    from codefoundry.tokenizer import load_tokenizer
    from codefoundry.train.samples import Batcher, PackedSamples

    tok = load_tokenizer(tok_dir)
    shape = preset(args.preset, len(tok)).to_hf_dict()
    config = GPTBigCodeConfig(**{k: v for k, v in shape.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(config)
    batcher = Batcher(PackedSamples(tokens, "train", args.seq_len, 0), tok, 0, 0.5, 0.5)

    class Samples(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return args.steps * args.micro_batch

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            x = torch.from_numpy(batcher.sample(i)[:args.seq_len])
            return {"input_ids": x, "labels": x}

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.micro_batch, max_steps=args.steps,
                              learning_rate=3e-4, weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0,
                              lr_scheduler_type="cosine", warmup_steps=2, logging_steps=10**6, save_strategy="no",
                              report_to=[], use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                              disable_tqdm=True, bf16=torch.cuda.is_available())
    Trainer(model=model, args=targs, train_dataset=Samples(), callbacks=[Clock()]).train()
    # on_step_begin/end bracket the data fetch too, as our loop's step time does
    return statistics.median(args.micro_batch * args.seq_len / t for t in times[2:])


OPS = {"+": "sum", "-": "difference", "*": "product", "//": "quotient", "%": "remainder", "**": "power"}
APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod,
         "**": operator.pow}
NAMES = [f"{word}{k}" for word in ("combine", "merge", "apply", "compute", "calc", "reduce", "mix", "join", "fold",
                                   "blend", "pair", "fuse") for k in range(10)]


def function(name: str, op: str) -> tuple[str, str, str]:
    """(prefix, middle, suffix) of one templated function; the middle is its body, named by the prefix."""
    prefix = f'def {name}_{OPS[op]}(a, b):\n    """Return the {OPS[op]} of a and b."""\n'
    middle = f"    return a {op} b\n"
    return prefix, middle, f"\n\nassert {name}_{OPS[op]}(7, 2) == {APPLY[op](7, 2)}\n"


def split_functions(seed: int = 0) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Functions to train on, and 100 held-out ones (name/operation pairs never seen in training)."""
    combos = [(n, op) for n in NAMES for op in OPS]
    rng = random.Random(seed)
    rng.shuffle(combos)
    return [function(*c) for c in combos[100:]], [function(*c) for c in combos[:100]]


def write_templated_dataset(root: Path, functions: list[tuple[str, str, str]]) -> Path:
    """A dataset/ artifact with one templated function per file."""
    rng = random.Random(1)
    rows = []
    for i, fn in enumerate(functions):  # one function per file: several whole documents per context
        text = "".join(fn)
        rows.append({"content": text, "repo_name": f"gen/repo{i % 40}", "path": f"f{i}.py", "stars": 1,
                     "lang": "Python"})
    rng.shuffle(rows)
    (root / "data" / "files").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "files" / "part-00000.parquet")
    write_manifest(root, "dataset", {"source": "templated functions"}, seed=0)
    return root


def fim_exact_match(model_dir: Path, held_out: list[tuple[str, str, str]]) -> float:
    from codefoundry.generate import SamplingParams, generate
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    tok, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    ids = tok.convert_tokens_to_ids
    prompts = [[ids("<fim_prefix>"), *tok.encode(p, add_special_tokens=False), ids("<fim_suffix>"),
                *tok.encode(s, add_special_tokens=False), ids("<fim_middle>")] for p, _, s in held_out]
    completions = generate(model, tok, prompts, SamplingParams(max_new_tokens=24))
    return sum(c.text == m for c, (_, m, _) in zip(completions, held_out, strict=True)) / len(held_out)


def fim(args: argparse.Namespace) -> None:
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    train_fns, held_out = split_functions()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = write_templated_dataset(root / "ds", train_fns)
        tok = train_tokenizer(dataset, root / "tok", TokenizerTrainConfig(vocab_size=512, byte_budget=5_000_000))
        tokens = pack(dataset, tok, root / "tokens", PackConfig(workers=1))
        em = {}
        for rate in (0.5, 0.0):
            cfg = TrainConfig(preset="tiny", seq_len=256, micro_batch_size=8, max_steps=args.steps, lr=3e-3,
                              warmup_steps=20, eval_interval=10**6, fim_rate=rate)
            em[rate] = fim_exact_match(train(root / f"fim{rate}", tok, tokens=tokens, config=cfg), held_out)
    print(f"FIM exact match, {len(held_out)} held-out templated functions, tiny preset, {args.steps} steps: "
          f"trained with FIM {em[0.5]:.2f}, without FIM {em[0.0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["throughput", "fim"], nargs="?", default="throughput")
    p.add_argument("--preset", default="small")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="default: 12 (throughput), 250 (fim)")
    args = p.parse_args()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))))
    if args.what == "fim":
        args.steps = args.steps or 250
        return fim(args)
    args.steps = args.steps or 12
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset, tok = make_inputs(root)
        tokens = pack(dataset, tok, root / "tokens", PackConfig(workers=1))
        a = ours(tokens, tok, root / "ours", args)
        b = hf_trainer(tokens, tok, root / "hf", args)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.preset} preset, seq {args.seq_len}, batch {args.micro_batch}, {args.steps} steps on {device}")
    print(f"codefoundry train: {a:,.0f} tokens/s")
    print(f"transformers Trainer: {b:,.0f} tokens/s")
    print(f"ratio: {a / b:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
