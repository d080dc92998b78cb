"""`merge()`: base model + LoRA adapter → one plain HF model directory (W' = W + (alpha / r) · B A).

The merged directory is an ordinary `model/` artifact: `codefoundry.model.load_model`, transformers'
`AutoModelForCausalLM` and every codefoundry stage open it; its manifest names the base and the adapter as
inputs, and records the datasets that trained either (`extra["training_datasets"]`), so the merged
model's lineage (contamination check, opt-out report, the server's /info) holds even once the adapter
directory is gone.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from codefoundry.errors import UserError
from codefoundry.finetune.lora import open_adapter
from codefoundry.lineage import SNAPSHOT_KEY, training_dataset_record
from codefoundry.manifest import MANIFEST_NAME, read_manifest

log = logging.getLogger(__name__)


def merge(model: str | Path, adapter: str | Path, out: str | Path, dtype: torch.dtype | None = None,
          overwrite: bool = False) -> Path:
    """Merge `adapter` into `model` (a directory or `.gguf` file) and save the result at `out`."""
    from codefoundry.model import load_model, resolve_model_path, save_pretrained
    from codefoundry.tokenizer import load_tokenizer

    adapter, out = Path(adapter), Path(out)
    if not Path(model).exists():
        raise UserError(f"--model {model} does not exist")
    if not adapter.is_dir():
        raise UserError(f"--adapter {adapter} is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already exists and is not empty", hint="choose another --out")
    base_dir = resolve_model_path(model)
    trained_on = _trained_on(adapter)
    if trained_on is not None and trained_on != base_dir.resolve():
        log.warning("adapter %s was trained on %s, merging into %s", adapter, trained_on, base_dir)
    base = load_model(base_dir, dtype=torch.float32)
    merged = open_adapter(base, adapter).merge_and_unload()
    inputs: dict[str, Path] = {}
    if (adapter / MANIFEST_NAME).exists():
        inputs["adapter"] = adapter
    if (base_dir / MANIFEST_NAME).exists():
        inputs["base_model"] = base_dir
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pretrained(merged, tmp, inputs=inputs, dtype=dtype,
                        config={"model": str(base_dir.resolve()), "adapter": str(adapter.resolve())},
                        extra={"merged_adapter": str(adapter.resolve()),
                               SNAPSHOT_KEY: training_dataset_record(inputs)})
        load_tokenizer(base_dir).save_pretrained(str(tmp))   # the tokenizer's files only, not the base's weights
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("merged %s into %s: %s", adapter, base_dir, out)
    return out


def _trained_on(adapter: Path) -> Path | None:
    try:
        return Path(read_manifest(adapter, kind="adapter").extra["base_model"]).resolve()
    except (UserError, KeyError, TypeError):
        return None
