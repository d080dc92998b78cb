"""Pretraining with fill-in-the-middle: pack a dataset into tokens, train, write an HF model.

Public API:
- `pack(dataset, tokenizer, out, PackConfig)` → the `tokens/` artifact (train/pack.py)
- `train(out, tokenizer, dataset=… | tokens=…, config=TrainConfig, resume=False)` → the `model/` artifact
- `apply_fim`, `fim_sample`, `FimTokens`, `TextCodec` (train/fim.py), `lr_at`, `flops_per_token`
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from codefoundry.errors import ArtifactError, UserError
from codefoundry.manifest import read_manifest
from codefoundry.train.card import write_model_card
from codefoundry.train.config import PackConfig, TrainConfig
from codefoundry.train.distributed import setup, teardown
from codefoundry.train.fim import FimTokens, TextCodec, apply_fim, fim_sample, permute
from codefoundry.train.metrics import flops_per_token
from codefoundry.train.pack import check_tokenizer, is_packed, pack
from codefoundry.train.schedule import lr_at

__all__ = ["FimTokens", "PackConfig", "TextCodec", "TrainConfig", "apply_fim", "fim_sample", "flops_per_token",
           "lr_at", "pack", "permute", "train"]

log = logging.getLogger(__name__)


def train(
    out: str | Path,
    tokenizer: str | Path,
    *,
    dataset: str | Path | None = None,
    tokens: str | Path | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
) -> Path:
    """Pretrain a model of `config.preset` and write it (HF format, with tokenizer and card) to `out`.

    Give `dataset` (packed first into `out/tokens`) or an already packed `tokens`. Under torchrun
    every process calls this; process 0 writes the artifact.
    """
    from codefoundry.tokenizer import load_tokenizer

    config = config or TrainConfig()
    if (dataset is None) == (tokens is None):
        raise UserError("give exactly one of --dataset or --tokens")
    out, tokenizer = Path(out), Path(tokenizer)
    check_tokenizer(tokenizer)
    if out.exists() and (out / "manifest.json").exists() and not resume:
        try:
            if read_manifest(out).kind == "model":
                raise UserError(f"{out} already holds a trained model",
                                hint="use --resume to continue its run, or another --out")
        except ArtifactError:
            pass
    if (out / "checkpoints" / "latest.json").exists() and not resume:
        raise UserError(f"{out} has checkpoints of an unfinished run",
                        hint="add --resume to continue it, or choose another --out")
    d = setup()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if dataset is not None:
            dataset = Path(dataset)
            tokens = out / "tokens"
            if d.main and not is_packed(tokens, dataset, tokenizer):
                pack(dataset, tokenizer, tokens, config.pack)
            d.barrier()
        tokens = Path(tokens)
        read_manifest(tokens, kind="tokens")
        tok = load_tokenizer(tokenizer)
        from codefoundry.train.loop import train_loop

        model, _, result = train_loop(config, tokens, tok, out, resume=resume, d=d)
        if d.main:
            _write_model(out, model, config, tokenizer, tokens, dataset, result)
        d.barrier()
    finally:
        teardown()
    return out


def _write_model(out: Path, model: Any, config: TrainConfig, tokenizer: Path, tokens: Path, dataset: Path | None,
                 result: Any) -> None:
    from codefoundry.model import save_pretrained

    tokens_manifest = read_manifest(tokens)
    dataset_dir = Path(dataset) if dataset is not None else (
        Path(tokens_manifest.inputs["dataset"].path) if "dataset" in tokens_manifest.inputs else None)
    inputs = {"tokens": tokens}
    if dataset_dir is not None and (dataset_dir / "manifest.json").exists():
        inputs["dataset"] = dataset_dir
    n_params = sum(p.numel() for p in model.parameters())
    results = {"steps": result.steps, "tokens": result.tokens, "parameters": n_params,
               "loss": round(result.losses[-1], 4) if result.losses else None,
               "val_loss": None if result.val_loss is None else round(result.val_loss, 4)}
    save_pretrained(model, out, tokenizer_dir=tokenizer, inputs=inputs, config=config, seed=config.seed,
                    extra={"training": results})
    # the card describes the model as saved: its config.json, whatever the architecture
    hf = json.loads((out / "config.json").read_text(encoding="utf-8"))
    write_model_card(out, config.model_dump(mode="json"), hf, results)
    log.info("model written to %s (%d steps, %s tokens)", out, result.steps, f"{result.tokens:,}")
