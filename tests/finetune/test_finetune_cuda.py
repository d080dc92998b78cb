"""On a GPU: bf16 base + autocast, float32 LoRA weights; the adapter still opens in peft with our logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from test_finetune_lora import make_base, small_config, write_rows

from codefoundry.finetune import LoraSettings, finetune, open_adapter
from codefoundry.model import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_bf16_finetune(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    base = make_base("llama", train_tokenizer_dir, tmp_path / "base")
    config = small_config(device="cuda", max_steps=16, eval_interval=16, lora=LoraSettings(r=8, alpha=16, dropout=0.0))
    adapter = finetune(base, write_rows(tmp_path / "rows.jsonl", 64), tmp_path / "adapter", config)
    results = json.loads((adapter / "manifest.json").read_text())["extra"]["training"]
    assert results["peak_memory_kind"] == "cuda_max_allocated" and results["peak_memory_bytes"] > 0
    assert results["val_loss"] < results["val_loss_before"]
    ids = torch.randint(19, 600, (2, 17), generator=torch.Generator().manual_seed(0))
    import peft

    hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64).eval()
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(hf, adapter).eval()(ids).logits
        ours = open_adapter(load_model(base, dtype=torch.float64), adapter).eval()(ids)
    assert (ours - theirs).abs().max().item() <= 1e-9
