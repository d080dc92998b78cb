"""`finetune()`: a base model + data → a PEFT LoRA adapter directory with its card and manifest.

    adapters/NAME/
      adapter_config.json         PEFT's LoraConfig (task_type CAUSAL_LM, base_model_name_or_path)
      adapter_model.safetensors   the LoRA weights only
      README.md                   the adapter card (base model, data and its skipped rows, results)
      manifest.json               kind "adapter"; inputs: the base model (and the dataset/); after the weights
      metrics.jsonl, loss.png, checkpoints/   as in pretraining (tokens/ too, for a dataset/)
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from codefoundry.atomic import atomic_write_json
from codefoundry.errors import ArtifactError, UserError
from codefoundry.finetune.card import base_model_facts, write_adapter_card
from codefoundry.finetune.config import FinetuneConfig
from codefoundry.finetune.data import dataset_batches, jsonl_batches
from codefoundry.finetune.lines import LineFimSettings, line_fim_batches
from codefoundry.finetune.loop import FinetuneResult, finetune_loop, use_bf16
from codefoundry.finetune.lora import add_lora, save_adapter, target_modules, token_ids, trainable_parameters
from codefoundry.manifest import MANIFEST_NAME, check_out_dir, manifest_sha256, read_manifest, write_manifest

log = logging.getLogger(__name__)
RUN_FILE = "checkpoints/run.json"   # what the checkpoints were trained on (a --resume must match it)
_FACT_NAMES = {"model": "--model", "data": "--data", "lora": "LoRA setting", "data_settings": "data setting"}


def pick_device(config: FinetuneConfig) -> torch.device:
    if config.device:
        try:
            device = torch.device(config.device)
        except RuntimeError as e:
            raise UserError(f"--device {config.device!r}: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {config.device}: no CUDA device is available", hint="use --device cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_out(out: Path, resume: bool) -> None:
    if resume:
        return
    if (out / MANIFEST_NAME).exists():
        try:
            kind = read_manifest(out).kind
        except ArtifactError:
            kind = None
        if kind == "adapter":
            raise UserError(f"{out} already holds a fine-tuned adapter", hint="choose another --out")
        raise UserError(f"{out} already holds a {kind or 'codefoundry'} artifact, not an adapter",
                        hint="choose another --out, e.g. adapters/NAME")
    if (out / "checkpoints" / "latest.json").exists():
        raise UserError(f"{out} has checkpoints of an unfinished run",
                        hint="add --resume to continue it, or choose another --out")


def finetune(model: str | Path, data: str | Path, out: str | Path, config: FinetuneConfig | None = None,
             resume: bool = False) -> Path:
    """Fine-tune a LoRA adapter for `model` (a model directory or `.gguf` file) on `data`; write it to `out`."""
    from codefoundry.model import load_config, load_model, model_class, resolve_model_path
    from codefoundry.tokenizer import load_tokenizer

    config = config or FinetuneConfig()
    out, data = Path(out), Path(data)
    if not Path(model).exists():
        raise UserError(f"--model {model} does not exist")
    if not data.exists():
        raise UserError(f"--data {data} does not exist")
    _check_out(out, resume)
    check_out_dir(out, "adapter", {"--model": model, "--data": data})
    base_dir = resolve_model_path(model)
    model_config = load_config(base_dir)
    if config.seq_len > model_config.n_positions:
        log.info("seq_len %d is above the model's %d positions: using %d", config.seq_len,
                 model_config.n_positions, model_config.n_positions)
        config = config.model_copy(update={"seq_len": model_config.n_positions})
    with torch.device("meta"):                                       # the module tree, no weights: check names early
        targets = target_modules(model_class(model_config)(model_config), config.lora.target_modules)
    tokenizer = load_tokenizer(base_dir)
    fresh = not out.exists()
    _same_run(out, {"model": str(base_dir.resolve()), "data": _data_fingerprint(data), "seq_len": config.seq_len,
                    "seed": config.seed, "data_settings": config.data.model_dump(mode="json"),
                    "lora": {**config.lora.model_dump(mode="json"), "target_modules": targets}}, resume)
    out.mkdir(parents=True, exist_ok=True)
    fim_rate = None
    try:
        if data.is_dir() and config.data.fim_holes == "lines":
            train, val, report = line_fim_batches(data, tokenizer, config.seed, config.data.validation_fraction,
                                                  line_settings(config))
            fim_rate = line_settings(config).fim_rate
        elif data.is_dir():
            train, val, report, fim_rate = dataset_batches(data, base_dir, tokenizer, out, config)
        else:
            train, val, report = jsonl_batches(data, tokenizer, config)
    except UserError:
        if fresh:  # data we refuse leaves no --out behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("data %s (%s): %s; %d training and %d validation sequences", data, report.format, report.summary(),
             report.train, report.validation)

    device = pick_device(config)
    bf16 = use_bf16(config, device)
    base = load_model(base_dir, dtype=torch.bfloat16 if bf16 else torch.float32, device=device)
    torch.manual_seed(config.seed)                                   # LoRA A's init
    peft_model = add_lora(base, config.lora.model_copy(update={"target_modules": targets}),
                          token_ids(tokenizer, config.lora.trainable_tokens))
    trainable, total = trainable_parameters(peft_model)
    log.info("LoRA on %s: %s trainable of %s parameters (%.3f%%)", ", ".join(targets), f"{trainable:,}",
             f"{total:,}", 100 * trainable / total)

    result = finetune_loop(peft_model, train, val, config, out, device, resume=resume)
    save_adapter(peft_model, out, base_dir)
    results = _results(result, trainable, total, targets, fim_rate)
    data_facts = report.to_json()
    inputs: dict[str, Path] = {}
    if (base_dir / MANIFEST_NAME).exists():
        inputs["model"] = base_dir
    if data.is_dir():
        inputs["dataset"] = data
    write_manifest(out, "adapter", config, seed=config.seed, inputs=inputs,
                   extra={"base_model": str(base_dir.resolve()), "data": data_facts, "training": results})
    model_type = model_config.to_hf_dict()["model_type"]
    write_adapter_card(out, base_model_facts(base_dir), model_type, config.model_dump(mode="json"), data_facts, results)
    log.info("adapter written to %s: validation loss %s → %s; %s tokens/s; peak memory %.0f MiB (%s)", out,
             results["val_loss_before"], results["val_loss"], results["tokens_per_s"],
             (results["peak_memory_bytes"] or 0) / 2**20, results["peak_memory_kind"])
    return out


def _data_fingerprint(data: Path) -> str:
    """A dataset/ by its manifest's hash, a JSONL file by its bytes' hash."""
    if data.is_dir():
        return manifest_sha256(data) if (data / MANIFEST_NAME).exists() else str(data.resolve())
    digest = hashlib.sha256()
    with data.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_run(out: Path, facts: dict[str, Any], resume: bool) -> None:
    """Record what a run trains on beside its checkpoints; a --resume from other data, another base model or other
    LoRA and data settings is refused (its adapter and card would claim what the weights were not trained on)."""
    path = out / RUN_FILE
    if resume and path.exists():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = [_FACT_NAMES.get(k, k) for k in facts if before.get(k) != facts[k]]
        if changed:
            raise UserError(f"the checkpoint in {out} was trained with another {', '.join(changed)} than this run",
                            hint="resume with the original --model, --data and LoRA/data settings, or choose "
                                 "another --out")
        return
    atomic_write_json(path, facts)


def line_settings(config: FinetuneConfig) -> LineFimSettings:
    d = config.data
    return LineFimSettings(max_prefix_tokens=d.fim_max_prefix_tokens, max_suffix_tokens=d.fim_max_suffix_tokens,
                           max_lines=d.fim_max_lines, spm_rate=d.fim_spm_rate,
                           fim_rate=1.0 if d.fim_rate is None else d.fim_rate,
                           examples=d.examples).fitted(config.seq_len)


def _results(result: FinetuneResult, trainable: int, total: int, targets: list[str],
             fim_rate: float | None) -> dict[str, Any]:
    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, 5)

    return {"steps": result.steps, "tokens": result.tokens, "trainable_parameters": trainable,
            "total_parameters": total, "target_modules": targets,
            "loss": rounded(result.losses[-1]) if result.losses else None,
            "val_loss_before": rounded(result.val_loss_before), "val_loss": rounded(result.val_loss),
            "tokens_per_s": None if result.tokens_per_s is None else round(result.tokens_per_s, 1),
            "peak_memory_bytes": result.peak_memory_bytes, "peak_memory_kind": result.peak_memory_kind,
            **({"fim_rate": fim_rate} if fim_rate is not None else {})}
