"""A real fine-tune: SmolLM2-135M-Instruct (the packaged GGUF) learns a small instruction set with LoRA;
transformers + peft open the adapter with our logits, and the held-out loss falls below the base's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from codefoundry.finetune import FinetuneConfig, FinetuneDataSettings, LoraSettings, finetune, open_adapter
from codefoundry.model import load_model

pytestmark = pytest.mark.slow


def _rows(path: Path) -> Path:
    """Function-naming rows in one fixed house style: held-out rows share the style, not the names."""
    verbs = ["parse", "render", "count", "merge", "split", "load", "check", "format"]
    things = ["tokens", "shards", "rows", "adapters", "configs", "manifests", "batches", "chunks"]
    rows = [{"instruction": f"Name the codefoundry helper that should {v} the {t}.",
             "response": f"`cf_{v}_{t}()` in `codefoundry/{t}.py`."} for v in verbs for t in things]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_smollm2_lora_lowers_held_out_loss_and_opens_in_peft(tmp_path: Path, smollm2_gguf: Path,
                                                             gguf_cache: Path) -> None:
    config = FinetuneConfig(seq_len=128, micro_batch_size=8, grad_accum=1, max_steps=12, lr=2e-3, eval_interval=12,
                            checkpoint_interval=12, device="cpu", data=FinetuneDataSettings(validation_fraction=0.15),
                            lora=LoraSettings(r=8, alpha=16, dropout=0.0))
    adapter = finetune(smollm2_gguf, _rows(tmp_path / "rows.jsonl"), tmp_path / "adapter", config)
    results = json.loads((adapter / "manifest.json").read_text())["extra"]["training"]
    assert results["val_loss"] < results["val_loss_before"] - 0.5          # learned the house style
    assert results["target_modules"] == ["q_proj", "v_proj"]
    assert results["trainable_parameters"] == 30 * 8 * ((576 + 576) + (576 + 192))   # SmolLM2: 30 layers, GQA
    card = (adapter / "README.md").read_text()
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in card                        # the base's lineage

    base_dir = Path(json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"])
    ids = torch.tensor([[1, 4093, 28, 1326, 7114, 30, 2]])
    import peft

    hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(hf, adapter).eval()(ids).logits
        ours = open_adapter(load_model(base_dir), adapter).eval()(ids)
    assert (ours - theirs).abs().max().item() <= 1e-3                      # float32, 30 layers
