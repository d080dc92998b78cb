"""`model_info(PATH)`: what a model directory or GGUF file holds, read from its headers (no weights loaded)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from codefoundry.errors import ArtifactError


def model_info(path: str | Path) -> dict[str, Any]:
    """Architecture, parameters, dtypes, context and shape of the model at `path`, and its lineage."""
    path = Path(path)
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        return _gguf_info(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is neither a model directory nor a .gguf file")
    return _dir_info(path)


def _shape(config: Any) -> dict[str, Any]:
    return {"context": config.n_positions, "layers": config.n_layer, "hidden_size": config.n_embd,
            "heads": config.n_head, "kv_heads": config.num_kv_heads, "vocab_size": config.vocab_size}


def _dir_info(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    from codefoundry.manifest import lineage
    from codefoundry.model.checkpoint import WEIGHTS_NAME, read_config

    config = read_config(path)
    files = [path / WEIGHTS_NAME] if (path / WEIGHTS_NAME).exists() else sorted(path.glob("model-*.safetensors"))
    params, dtypes = 0, Counter()
    try:
        for file in files:
            with safe_open(str(file), "pt") as f:
                for key in f.keys():                             # noqa: SIM118 (safe_open is not a dict)
                    t = f.get_slice(key)
                    n = 1
                    for d in t.get_shape():
                        n *= d
                    params += n
                    dtypes[t.get_dtype().lower()] += n
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"{path}: cannot read weights: {e}") from None
    hf = config.to_hf_dict()
    chain = [{"role": role, "kind": m.kind, "path": str(p), "created": getattr(m, "created", None)}
             for role, p, m in lineage(path)]
    source = None
    if (path / "manifest.json").exists():
        source = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("extra", {}).get("source")
    return {"path": str(path), "format": "hf", "architecture": hf["model_type"], "parameters": params,
            "dtype": dict(dtypes), **_shape(config), "tied_embeddings": bool(hf.get("tie_word_embeddings", True)),
            "rope_scaling": hf.get("rope_scaling"), "lineage": chain, "imported_from": source}


def _gguf_info(path: Path) -> dict[str, Any]:
    from codefoundry.model.checkpoint import ARCHITECTURES
    from codefoundry.model.gguf_import import config_from_gguf, read_gguf, read_metadata, tensor_shapes

    reader = read_gguf(path)
    meta = read_metadata(reader, with_tokenizer=False)
    shapes = tensor_shapes(reader)
    names = set(shapes)
    hf = config_from_gguf(meta, shapes)
    config = ARCHITECTURES[hf["model_type"]][0].from_hf_dict(hf)
    types = Counter()
    for t in reader.tensors:
        types[t.tensor_type.name.lower()] += int(t.n_elements)
    return {"path": str(path), "format": "gguf", "architecture": hf["model_type"],
            "gguf_architecture": meta.get("general.architecture"), "name": meta.get("general.name"),
            "parameters": sum(types.values()), "dtype": dict(types), **_shape(config),
            "tied_embeddings": "output.weight" not in names, "chat_template": "tokenizer.chat_template" in meta,
            "lineage": []}
