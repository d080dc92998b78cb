"""`codefoundry train`: pretrain a StarCoder-style model with FIM (and `train pack`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import (
    ConfigOpt,
    DatasetOpt,
    SeedOpt,
    TokenizerOpt,
    WorkersOpt,
    examples,
    stage_config,
)
from codefoundry.errors import UserError

TRAIN_EXAMPLES = examples(
    "codefoundry train --dataset dataset/ --tokenizer tokenizer/ --out model/ --preset tiny --max-time 2m",
    "codefoundry train --tokens tokens/ --tokenizer tokenizer/ --out model/ --preset small --max-steps 2000",
    "codefoundry train --tokens tokens/ --tokenizer tokenizer/ --out model/ --preset small --max-steps 2000 --resume",
    "torchrun --standalone --nproc_per_node 2 -m codefoundry train --tokens tokens/ --tokenizer tokenizer/ "
    "--out model/ --max-tokens 50000000",
    "torchrun --standalone --nproc_per_node 4 -m codefoundry train --tokens tokens/ --tokenizer tokenizer/ "
    "--out model/ --tp 2     # 2 data-parallel replicas × 2 tensor-parallel shards",
    "torchrun --standalone --nproc_per_node 8 -m codefoundry train --tokens tokens/ --tokenizer tokenizer/ "
    "--out model/ --tp 2 --pp 2 --distributed fsdp     # FSDP2 over 2 replicas × 2 stages × 2 shards",
)
PACK_EXAMPLES = examples(
    "codefoundry train pack --dataset dataset/ --tokenizer tokenizer/ --out tokens/",
    "codefoundry train pack --dataset dataset/ --tokenizer tokenizer/ --out tokens/ --metadata-rate 0.2",
)

app = typer.Typer(help="Pack a dataset into tokens and pretrain a model with fill-in-the-middle.",
                  invoke_without_command=True, epilog=TRAIN_EXAMPLES)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)?")


def parse_duration(text: str | None) -> float | None:
    """'10m', '90s', '1h30m', '45' (seconds) → seconds."""
    if text is None:
        return None
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise UserError(f"--max-time: cannot read {text!r} as a duration", hint="use e.g. 90s, 10m or 1h30m")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"--max-time must be positive, given {text!r}")
    return seconds


@app.callback()
def train(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    tokens: Annotated[Path | None, typer.Option("--tokens", help="Input tokens/ artifact (from `train pack`).")] = None,
    tokenizer: TokenizerOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output model/ artifact directory.")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Model size: tiny, small, long, 125m, santacoder-1b, "
                                                                 "starcoder-15b (default: small).")] = None,
    config: ConfigOpt = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Optimizer steps.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Training tokens.")] = None,
    max_time: Annotated[str | None, typer.Option("--max-time", help="Time budget, e.g. 90s, 10m, 1h.")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", min=8, help="Tokens per sequence.")] = None,
    micro_batch_size: Annotated[int | None, typer.Option("--micro-batch-size", min=1)] = None,
    batch_tokens: Annotated[int | None, typer.Option("--batch-tokens", min=1,
                                                     help="Global batch in tokens (gradient accumulation).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    fim_rate: Annotated[float | None, typer.Option("--fim-rate", help="FIM probability per document.")] = None,
    distributed: Annotated[str | None, typer.Option(
        "--distributed", help="ddp or fsdp (under torchrun; beside --tp/--pp, over the data-parallel replicas).")
    ] = None,
    tp: Annotated[int | None, typer.Option("--tp", min=1, help="Tensor-parallel processes per replica (under torchrun: "
                                                              "world / N data-parallel replicas).")] = None,
    pp: Annotated[int | None, typer.Option("--pp", min=1, help="Pipeline stages, one process each, per replica "
                                                              "(under torchrun).")
                  ] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.",
                                                 show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint: give the "
                                                           "flags of the command that started it, plus --resume.")
                      ] = False,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Pretrain a model with FIM (packs the dataset first when given --dataset)."""
    if ctx.invoked_subcommand is not None:
        return
    from codefoundry.train import TrainConfig
    from codefoundry.train import train as run_training

    if tokenizer is None:
        raise UserError("missing --tokenizer DIR", hint="see: codefoundry train --help")
    if out is None:
        raise UserError("missing --out DIR (where the model goes)")
    if (dataset is None) == (tokens is None):
        raise UserError("give exactly one of --dataset DIR or --tokens DIR")
    cfg = stage_config(TrainConfig, config, preset=preset, max_steps=max_steps, max_tokens=max_tokens,
                       max_time=parse_duration(max_time), seq_len=seq_len, micro_batch_size=micro_batch_size,
                       batch_tokens=batch_tokens, lr=lr, fim_rate=fim_rate, distributed=distributed, tp=tp, pp=pp,
                       compile=compile, seed=seed, **{"pack.workers": workers, "pack.seed": seed})
    from codefoundry.manifest import check_out_dir

    check_out_dir(out, "model", {"tokenizer": tokenizer, "dataset": dataset, "tokens": tokens})
    run_training(out, tokenizer, dataset=dataset, tokens=tokens, config=cfg, resume=resume)


@app.command("pack", epilog=PACK_EXAMPLES)
def pack(
    dataset: DatasetOpt = None,
    tokenizer: TokenizerOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output tokens/ artifact directory.")] = None,
    config: ConfigOpt = None,
    validation_fraction: Annotated[float | None, typer.Option("--validation-fraction",
                                                              help="Share of repositories held out.")] = None,
    metadata_rate: Annotated[float | None, typer.Option("--metadata-rate",
                                                        help="StarCoder metadata prefix rate (0.2 in StarCoder).")
                             ] = None,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Tokenize a dataset into flat token files + index.json (train/validation split by repository)."""
    from codefoundry.train import PackConfig
    from codefoundry.train import pack as run_pack

    for name, value in (("--dataset", dataset), ("--tokenizer", tokenizer), ("--out", out)):
        if value is None:
            raise UserError(f"missing {name} DIR", hint="see: codefoundry train pack --help")
    cfg = stage_config(PackConfig, config, validation_fraction=validation_fraction, metadata_rate=metadata_rate,
                       seed=seed, workers=workers)
    from codefoundry.manifest import check_out_dir

    check_out_dir(out, "tokens", {"dataset": dataset, "tokenizer": tokenizer})
    run_pack(dataset, tokenizer, out, cfg)
