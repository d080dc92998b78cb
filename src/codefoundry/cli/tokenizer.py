"""`codefoundry tokenizer …`: train a byte-level BPE tokenizer with StarCoder's special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import ConfigOpt, OutOpt, SeedOpt, defaults_from, examples, stage_config
from codefoundry.errors import UserError

app = typer.Typer(help="Train a code tokenizer (byte-level BPE, StarCoder special tokens).", no_args_is_help=True,
                  epilog=examples("codefoundry tokenizer train dataset/ --out tokenizer/ --vocab-size 8192"))


def _train_config() -> type:
    from codefoundry.tokenizer import TokenizerTrainConfig

    return TokenizerTrainConfig


@app.command("train", cls=defaults_from(_train_config), epilog=examples(
    "codefoundry tokenizer train dataset/ --out tokenizer/ --vocab-size 8192",
    "codefoundry tokenizer train dataset/ --out tokenizer/ --vocab-size 49152 --byte-budget 2000000000",
    "codefoundry tokenizer train dataset/ --out tokenizer/ --language-alpha 0.5 --config tokenizer.yaml",
))
def train(
    dataset: Annotated[Path, typer.Argument(help="dataset/ artifact (data/<subset>/*.parquet shards).",
                                            show_default=False)],
    out: OutOpt,
    config: ConfigOpt = None,
    vocab_size: Annotated[int | None, typer.Option(
        "--vocab-size", help="Vocabulary size including the 19 special tokens (default: {default}).",
        show_default=False)] = None,
    byte_budget: Annotated[int | None, typer.Option(
        "--byte-budget", help="Bytes of code to sample across languages (default: {default}).",
        show_default=False)] = None,
    language_alpha: Annotated[float | None, typer.Option(
        "--language-alpha", help="Language shares ∝ bytes**alpha; below 1 lifts rare languages (default: {default}).",
        show_default=False)] = None,
    seed: SeedOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a tokenizer already in --out.")] = False,
) -> None:
    """Train a byte-level BPE tokenizer on DATASET: digits split, StarCoder's special tokens at ids 0-18.

    The result is an HF tokenizer directory (AutoTokenizer.from_pretrained opens it). An
    interrupted run leaves no tokenizer behind: run the same command again.
    """
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    if (out / "tokenizer.json").exists() and not overwrite:
        raise UserError(f"{out} already holds a tokenizer", "pass --overwrite to replace it")
    cfg = stage_config(TokenizerTrainConfig, config, vocab_size=vocab_size, byte_budget=byte_budget,
                       language_alpha=language_alpha, seed=seed)
    train_tokenizer(dataset, out, cfg)
