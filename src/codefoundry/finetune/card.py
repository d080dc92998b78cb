"""The adapter card: `README.md` with HF front matter (`library_name: peft`, `base_model`) and the lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from codefoundry.lineage import decontaminated_against, training_datasets
from codefoundry.manifest import lineage


def base_model_facts(base_dir: Path) -> dict[str, Any]:
    """What the base model is: its directory, and the GGUF file it was imported from, if any."""
    facts: dict[str, Any] = {"path": str(base_dir.resolve())}
    for _, _, manifest in lineage(base_dir):
        source = manifest.extra.get("source")
        if isinstance(source, dict) and source.get("gguf"):
            facts["gguf"] = source["gguf"]
            facts["gguf_sha256"] = source.get("sha256")
            facts["name"] = source.get("name")
        break
    return facts


def write_adapter_card(out: Path, base: dict[str, Any], model_type: str, config: dict[str, Any],
                       data: dict[str, Any], results: dict[str, Any]) -> Path:
    """Write `out/README.md` (replacing the stub PEFT writes) and return its path."""
    chain = [{"role": role, "kind": m.kind, "path": str(p), "created": m.created}
             for role, p, m in lineage(out) if role != "adapter"]
    # every dataset whose text is in these weights: the fine-tuning data and the base model's
    trained_on = [{"role": u.role, "path": str(u.path), "manifest_sha256": u.recorded_sha256,
                   "decontaminated_against": decontaminated_against(u.path, u.manifest)}
                  for u in training_datasets(out)]
    meta = {
        "library_name": "peft",
        "base_model": base["path"],
        "pipeline_tag": "text-generation",
        "tags": ["code", "lora", "peft", "codefoundry", model_type],
        "codefoundry": {"base_model": base, "data": data, "lineage": chain, "training_datasets": trained_on,
                        "finetuning": config,
                        "results": results},
    }
    lora = config["lora"]
    skipped = ", ".join(f"{r} ×{n}" for r, n in (data.get("skipped") or {}).items()) or "none"
    before, after = results.get("val_loss_before"), results.get("val_loss")
    memory = results.get("peak_memory_bytes")
    gguf = f" (imported from `{base['gguf']}`)" if base.get("gguf") else ""
    facts = [
        f"Base model: `{base['path']}`{gguf}.",
        f"Data: `{data['path']}` ({data['format']}, sha256 `{data.get('sha256') or '-'}`): {data['kept']} of "
        f"{data['rows']} rows kept, {data['train_sequences']} training and {data['validation_sequences']} "
        f"validation sequences; skipped: {skipped}.",
        f"Training: {results['steps']} steps, {results['tokens']:,} tokens, {results.get('tokens_per_s') or '-'} "
        f"tokens/s; {results['trainable_parameters']:,} trainable of {results['total_parameters']:,} parameters; "
        f"peak memory {f'{memory / 2**20:,.0f} MiB' if memory else '-'} ({results.get('peak_memory_kind') or '-'}).",
        f"Validation loss: {before} (base) → {after}.",
    ]
    bullets = "\n".join(f"- {line}" for line in facts)
    targets = ", ".join(results["target_modules"])
    trained = lora.get("trainable_tokens") or []
    tokens = (f"\nIt also holds trained embedding rows of {', '.join(f'`{t}`' for t in trained)} (PEFT's "
              "`trainable_token_indices`), which replace the base's rows (and the tied LM head's) wherever the "
              "adapter is applied: PEFT, `codefoundry serve`, merging.") if trained else ""
    body = f"""# {out.name}

A LoRA adapter for `{base.get('name') or base['path']}` ({model_type}), fine-tuned by `codefoundry finetune` with
PEFT: r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, targets {targets}.{tokens}

{bullets}

## Use

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained("{base['path']}")
model = PeftModel.from_pretrained(base, "{out}")
```

Serve it beside the base with `codefoundry serve --model {base['path']} --adapter {out.name}={out}`, or
merge it into a plain model with `codefoundry finetune merge --model {base['path']} --adapter {out} --out DIR`.
"""
    path = out / "README.md"
    path.write_text("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body,
                    encoding="utf-8")
    return path
