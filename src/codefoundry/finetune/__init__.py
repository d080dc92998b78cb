"""codefoundry.finetune: LoRA fine-tuning with `peft` on a user's code or instructions, and merging.

Public API:
- `finetune(model, data, out, FinetuneConfig, resume=False)` → an `adapters/NAME/` directory in PEFT's
  format (adapter_config.json + adapter_model.safetensors) with README.md and manifest.json
- `merge(model, adapter, out)` → an HF `model/` directory with the adapter folded into the weights
- `open_adapter(our_model, adapter_dir)` → our model with the adapter applied (a `peft.PeftModel`)
- `FinetuneConfig`, `LoraSettings`, `FinetuneDataSettings`
"""

from codefoundry.finetune.config import FinetuneConfig, FinetuneDataSettings, LoraSettings
from codefoundry.finetune.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, DEFAULT_TARGETS, open_adapter
from codefoundry.finetune.merge import merge
from codefoundry.finetune.train import finetune

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "DEFAULT_TARGETS", "FinetuneConfig", "FinetuneDataSettings",
           "LoraSettings", "finetune", "merge", "open_adapter"]
