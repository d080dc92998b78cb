"""Training: throughput of codefoundry's loop vs transformers' Trainer, and what FIM training buys.

    .venv/bin/python bench/train.py throughput           # small preset, 49K vocab, seq 256, batch 8, 12 steps
    .venv/bin/python bench/train.py throughput --vocab 8192 --steps 30 --seq-len 512
    .venv/bin/python bench/train.py fim                  # FIM exact match, trained with vs without FIM
    .venv/bin/python bench/train.py mfu [--compile]      # GPU: MFU of the 125m preset, seq 2048 x 16, bf16

Both train a GPTBigCode model of the `small` preset's shape (codefoundry's own module vs
transformers' GPTBigCodeForCausalLM under `Trainer`) on the same FIM-permuted samples of the
same packed tokens (Python stdlib code, tokenized with an 8K BPE trained here), with the same
AdamW/cosine/clipping settings. Reports median tokens/s over the steps after the first two.

`fim`: `codefoundry.train.fim_probe.compare` — a 2-layer, 192-wide model is trained on templated
classes whose masked line names a field only the suffix mentions, with FIM (rate 1.0, PSM only)
and, for the same steps, without; each then fills the masked line of 100 held-out classes
(field names never seen) from a PSM prompt, greedy, via codefoundry.generate.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from codefoundry.manifest import write_manifest
from codefoundry.model import preset
from codefoundry.tokenizer import load_tokenizer
from codefoundry.train import PackConfig, TrainConfig, pack, train

STDLIB = Path(os.__file__).parent


def _first_mb(files: list[Path], mb: int) -> list[Path]:
    sizes = itertools.accumulate(f.stat().st_size for f in files)
    return [f for f, total in zip(files, sizes, strict=True) if total <= mb * 1_000_000]


def make_inputs(root: Path, vocab: int) -> tuple[Path, Path]:
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    # 120 top-level modules (3 MB) fill an 8K vocabulary; a 49K one needs more of the stdlib
    files = sorted(STDLIB.glob("*.py"))[:120] if vocab <= 8192 else _first_mb(sorted(STDLIB.rglob("*.py")), 15)
    rows = [{"content": f.read_text(encoding="utf-8", errors="replace"), "lang": "Python", "path": f.name,
             "repo_name": f"stdlib/{f.stem}", "stars": 0, "size": f.stat().st_size, "ext": "py"} for f in files]
    (root / "ds" / "data" / "files").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "ds" / "data" / "files" / "part-00000.parquet")
    write_manifest(root / "ds", "dataset", {"source": "stdlib"}, seed=0)
    tok = train_tokenizer(root / "ds", root / "tok", TokenizerTrainConfig(vocab_size=vocab, byte_budget=40_000_000))
    return root / "ds", tok


def ours(tokens: Path, tok: Path, out: Path, args: argparse.Namespace) -> float:
    cfg = TrainConfig(preset=args.preset, seq_len=args.seq_len, micro_batch_size=args.micro_batch, max_steps=args.steps,
                      eval_interval=10**6, checkpoint_interval=10**6, warmup_steps=2)
    train(out, tok, tokens=tokens, config=cfg)
    # step-to-step wall time (data, forward/backward, optimizer, logging): what the Trainer side measures
    ends = [json.loads(line)["elapsed_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(args.micro_batch * args.seq_len / (b - a) for a, b in itertools.pairwise(ends[1:]))


def hf_trainer(tokens: Path, tok_dir: Path, out: Path, args: argparse.Namespace) -> float:
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, Trainer, TrainerCallback, TrainingArguments

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
        # Trainer fetches a step's batches (our FIM Batcher) *before* on_step_begin, so step-to-step
        # wall time between on_step_end calls is what brackets the same work as our loop's step.
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.micro_batch, max_steps=args.steps,
                              learning_rate=3e-4, weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0,
                              lr_scheduler_type="cosine", warmup_steps=2, logging_steps=10**6, save_strategy="no",
                              report_to=[], use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                              disable_tqdm=True, bf16=torch.cuda.is_available())
    Trainer(model=model, args=targs, train_dataset=Samples(), callbacks=[Clock()]).train()
    return statistics.median(args.micro_batch * args.seq_len / (b - a) for a, b in itertools.pairwise(times[1:]))


def fim(args: argparse.Namespace) -> None:
    from codefoundry.train.fim_probe import PROBE_FIM_RATE, PROBE_MODEL, compare

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        em = compare(Path(tmp), args.steps)
    print(f"FIM exact match, 100 held-out templated classes (middle implied only by the suffix), model "
          f"{PROBE_MODEL}, {args.steps} steps of 16 x 64 tokens, FIM rate {PROBE_FIM_RATE} PSM: "
          f"trained with FIM {em['fim']:.2f}, without FIM {em['no_fim']:.2f} ({time.perf_counter() - start:.0f} s)")


def mfu(args: argparse.Namespace) -> None:
    """Our loop's MFU on a GPU: bf16 autocast, fused AdamW, SDPA, optionally torch.compile."""
    if not torch.cuda.is_available() and args.peak_flops is None:
        sys.exit("bench/train.py mfu needs a CUDA GPU (or --peak-flops FLOPS to try the script on this CPU)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset, tok = make_inputs(root, args.vocab)
        tokens = pack(dataset, tok, root / "tokens", PackConfig(workers=os.cpu_count() or 1))
        cfg = TrainConfig(preset=args.preset, seq_len=args.seq_len, micro_batch_size=args.micro_batch,
                          max_steps=args.steps, eval_interval=10**6, checkpoint_interval=10**6, warmup_steps=2,
                          compile=args.compile, peak_flops=args.peak_flops)
        train(root / "out", tok, tokens=tokens, config=cfg)
        n_params = preset(args.preset, len(load_tokenizer(tok))).num_parameters()
        records = [json.loads(line) for line in (root / "out" / "metrics.jsonl").read_text().splitlines()]
    steady = records[len(records) // 3:]                          # past warm-up and compilation
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{args.preset} preset ({n_params / 1e6:.0f}M parameters), seq {args.seq_len} x {args.micro_batch}, "
          f"{args.steps} steps on {device}, compile={args.compile}")
    print(f"tokens/s: {statistics.median(r['tokens_per_s'] for r in steady):,.0f}")
    print(f"MFU: {statistics.median(r['mfu'] for r in steady):.1%} (median of steps {steady[0]['step']}-{args.steps})")


DEFAULTS = {  # what: (preset, seq_len, micro_batch, vocab, steps)
    "throughput": ("small", 256, 8, 49152, 12),
    "fim": ("small", 256, 8, 8192, 1000),
    "mfu": ("125m", 2048, 16, 49152, 40),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=list(DEFAULTS), nargs="?", default="throughput")
    p.add_argument("--preset", help="default: small (throughput), 125m (mfu)")
    p.add_argument("--seq-len", type=int, help="default: 256 (throughput), 2048 (mfu)")
    p.add_argument("--micro-batch", type=int, help="default: 8 (throughput), 16 (mfu)")
    p.add_argument("--vocab", type=int, help="BPE vocabulary trained for the run; default: StarCoder's 49152 "
                                            "(15 MB of stdlib fill 46,861 of it), 8192 for fim")
    p.add_argument("--steps", type=int, help="default: 12 (throughput), 1000 (fim), 40 (mfu)")
    p.add_argument("--compile", action="store_true", help="mfu: torch.compile the model")
    p.add_argument("--peak-flops", type=float, help="mfu: the device's peak FLOP/s (default: known GPUs' bf16 peak)")
    args = p.parse_args()
    for name, default in zip(("preset", "seq_len", "micro_batch", "vocab", "steps"), DEFAULTS[args.what], strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))))
    if args.what == "fim":
        return fim(args)
    if args.what == "mfu":
        return mfu(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset, tok = make_inputs(root, args.vocab)
        tokens = pack(dataset, tok, root / "tokens", PackConfig(workers=1))
        a = ours(tokens, tok, root / "ours", args)
        b = hf_trainer(tokens, tok, root / "hf", args)
        vocab = len(load_tokenizer(tok))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.preset} preset, vocab {vocab:,}, seq {args.seq_len}, "
          f"batch {args.micro_batch}, {args.steps} steps on {device}")
    print(f"codefoundry train: {a:,.0f} tokens/s")
    print(f"transformers Trainer: {b:,.0f} tokens/s")
    print(f"ratio: {a / b:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
