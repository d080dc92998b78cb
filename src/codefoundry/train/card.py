"""The model card: `README.md` with YAML front matter (HF model-card metadata) and a short body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from codefoundry.manifest import lineage


def _stats_licenses(dataset: Path) -> set[str]:
    """SPDX ids of kept files in a dataset's `stats.json` (any subset), without 'none'."""
    try:
        stats = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {spdx for subset in (stats.get("subsets") or {}).values()
            for spdx, counts in (subset.get("licenses") or {}).items()
            if spdx != "none" and counts.get("kept_files", 1)}


def _dataset_facts(model_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Licenses and lineage entries (role, path, kind, created) of everything upstream of the model."""
    licenses: set[str] = set()
    chain = []
    for role, path, manifest in lineage(model_dir):
        if role == "model":
            continue
        chain.append({"role": role, "kind": manifest.kind, "path": str(path), "created": manifest.created})
        if manifest.kind == "dataset":
            licenses.update(_stats_licenses(path))
    return sorted(licenses), chain


def write_model_card(model_dir: Path, train_config: dict[str, Any], model_config: dict[str, Any],
                     results: dict[str, Any]) -> Path:
    """Write `model_dir/README.md`; the `model-index` block is left for `codefoundry eval` to fill."""
    licenses, chain = _dataset_facts(model_dir)
    meta = {
        "license": "other" if len(licenses) != 1 else licenses[0].lower(),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["code", "gpt_bigcode", "codefoundry", "fill-in-the-middle"],
        "datasets": [e["path"] for e in chain if e["kind"] == "dataset"],
        "codefoundry": {"lineage": chain, "training": train_config, "results": results,
                        "dataset_licenses": licenses},
        "model-index": [{"name": model_dir.name, "results": []}],
    }
    params = results.get("parameters")
    body = f"""# {model_dir.name}

A StarCoder-style (GPTBigCode, multi-query attention) code model trained by codefoundry with
fill-in-the-middle (FIM rate {train_config.get('fim_rate')}, SPM rate {train_config.get('fim_spm_rate')}).

- Size: {f'{params:,}' if params else '?'} parameters, preset `{train_config.get('preset')}`,
  {model_config.get('n_layer')} layers, width {model_config.get('n_embd')}, {model_config.get('n_positions')} positions.
- Training: {results.get('steps')} steps, {results.get('tokens'):,} tokens; final train loss {results.get('loss')},
  validation loss {results.get('val_loss')}.
- Data: {', '.join(meta['datasets']) or 'see lineage'}; dataset licenses: {', '.join(licenses) or 'not recorded'}.

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{model_dir}")
model = AutoModelForCausalLM.from_pretrained("{model_dir}")
prompt = "<fim_prefix>def add(a, b):\\n    <fim_suffix>\\n<fim_middle>"
```

The `model-index` block in the front matter is filled by `codefoundry eval`.
"""
    path = model_dir / "README.md"
    path.write_text("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body,
                    encoding="utf-8")
    return path
