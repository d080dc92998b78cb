"""Checkpoints in Hugging Face format: what we save opens in transformers, and back.

A model directory holds `config.json` (`model_type`: gpt_bigcode, llama or starcoder2 picks
the architecture; `architectures`), `model.safetensors` (HF parameter names and [out, in]
layouts; a tied `lm_head.weight` left out, as transformers itself saves it),
`generation_config.json`, the tokenizer's files, and `manifest.json` (its inputs: the
tokenizer, and whatever the caller passes, e.g. the dataset or the tokens it trained on).
This module reads directories; `codefoundry.model.load` lets a `.gguf` file stand wherever a
model directory is read (imported once into a cache directory).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codefoundry.atomic import atomic_write_json
from codefoundry.errors import ArtifactError, ConfigError
from codefoundry.manifest import MANIFEST_NAME, write_manifest
from codefoundry.model.config import GPTBigCodeConfig
from codefoundry.model.gpt_bigcode import GPTBigCodeForCausalLM
from codefoundry.model.llama import LlamaConfig, LlamaForCausalLM
from codefoundry.model.starcoder2 import Starcoder2Config, Starcoder2ForCausalLM

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
# Buffers some checkpoints carry that hold no weights (old GPTBigCode masks, old Llama RoPE tables).
IGNORED_KEYS = ("transformer.bias", "transformer.masked_bias")
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

ModelConfig = GPTBigCodeConfig | LlamaConfig | Starcoder2Config
CausalLM = GPTBigCodeForCausalLM | LlamaForCausalLM | Starcoder2ForCausalLM

ARCHITECTURES: dict[str, tuple[type, type]] = {
    "gpt_bigcode": (GPTBigCodeConfig, GPTBigCodeForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "starcoder2": (Starcoder2Config, Starcoder2ForCausalLM),
}
"""config.json `model_type` → (config class, model class)."""


def save_pretrained(
    model: CausalLM,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    *,
    inputs: Mapping[str, str | Path] | None = None,
    config: BaseModel | Mapping[str, Any] | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` to `out_dir` in HF format and return the directory.

    `tokenizer_dir`'s files are copied beside the weights and its manifest becomes the
    `tokenizer` input; `inputs` adds more (role → artifact dir, e.g. {"tokens": …}).
    `config` is the producing stage's config for the manifest (default: the model config);
    `dtype` casts the saved weights (default: as they are).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu", dtype or t.dtype).contiguous()
               for name, t in model.state_dict().items() if name not in model.tied_weights}
    tmp_path = out / f".{WEIGHTS_NAME}.tmp"                    # safetensors writes by path: write, then rename
    save_file(tensors, str(tmp_path), metadata={"format": "pt"})
    os.replace(tmp_path, out / WEIGHTS_NAME)
    cfg = model.config
    atomic_write_json(out / CONFIG_NAME, {**cfg.to_hf_dict(), "torch_dtype": _dtype_name(dtype or _model_dtype(model))})
    atomic_write_json(out / GENERATION_CONFIG_NAME, {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
                                                     "pad_token_id": cfg.eos_token_id})
    roles: dict[str, str | Path] = {}
    if tokenizer_dir is not None:
        copy_tokenizer_files(tokenizer_dir, out)
        if (Path(tokenizer_dir) / MANIFEST_NAME).exists():
            roles["tokenizer"] = tokenizer_dir
    roles.update(inputs or {})
    write_manifest(out, "model", config if config is not None else cfg.to_hf_dict(), seed=seed, inputs=roles,
                   extra={"parameters": model.num_parameters(), **(extra or {})})
    return out


def copy_tokenizer_files(tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    """Copy a tokenizer directory's files (not its manifest) into a model directory."""
    src = Path(tokenizer_dir)
    if not (src / "tokenizer.json").exists():
        raise ArtifactError(f"{src} has no tokenizer.json: is it a tokenizer directory?",
                            "train one with: codefoundry tokenizer train DATASET --out DIR")
    for path in src.iterdir():
        if path.is_file() and path.name != MANIFEST_NAME and not path.name.startswith("."):
            shutil.copyfile(path, Path(out_dir) / path.name)


def model_class(config: ModelConfig) -> type:
    """The model class of `config`'s architecture."""
    return next(m for c, m in ARCHITECTURES.values() if type(config) is c)


def read_config(model_dir: str | Path) -> ModelConfig:
    """The config of the model in directory `model_dir`; `model_type` picks its class."""
    path = Path(model_dir) / CONFIG_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # a missing path, or a file given for the directory
        raise ArtifactError(f"{model_dir} has no {CONFIG_NAME}: is it a model directory?") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} cannot be read: {e}") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is not a JSON object")
    model_type = data.get("model_type", "gpt_bigcode")
    if model_type not in ARCHITECTURES:
        raise ArtifactError(f"{path}: model_type {model_type!r} is not supported; codefoundry.model reads "
                            f"{', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[model_type][0].from_hf_dict(data)
    except ConfigError as e:
        raise ArtifactError(f"{path}: {e}") from None


def read_model(model_dir: str | Path, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> CausalLM:
    """Load the checkpoint in directory `model_dir` (ours or one saved by transformers) in eval mode.

    Every weight must be present with HF's name and shape; a tied weight that is missing
    (`lm_head.weight`) is the embedding, one that is present must equal it.
    """
    config = read_config(model_dir)
    state = _read_weights(Path(model_dir))
    with torch.device("meta"):
        model = model_class(config)(config)
    expected = {name: p.shape for name, p in model.state_dict().items()}
    for key in [*IGNORED_KEYS, *(k for k in state if k.endswith(IGNORED_SUFFIXES))]:
        state.pop(key, None)
    tied = model.tied_weights
    for key, source in tied.items():
        copy = state.pop(key, None)
        if copy is not None and source in state and not torch.equal(copy, state[source]):
            raise ArtifactError(f"{model_dir}: {key} differs from {source}, but config.json ties them "
                                "(tie_word_embeddings)")
    missing = sorted(set(expected) - set(state) - set(tied))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArtifactError(f"{model_dir}/{WEIGHTS_NAME} does not match its config.json: missing "
                            f"{missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name]:
            raise ArtifactError(f"{model_dir}: {name} has shape {list(tensor.shape)}, config.json implies "
                                f"{list(expected[name])}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    for key, source in tied.items():                            # assign=True replaced the shared Parameter
        owner, _, name = key.rpartition(".")
        setattr(model.get_submodule(owner), name, model.get_parameter(source))
    return model.to(device).eval()


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    single = model_dir / WEIGHTS_NAME
    index = model_dir / f"{WEIGHTS_NAME}.index.json"
    try:
        if single.exists():
            return load_file(str(single))
        if index.exists():                                       # sharded HF checkpoints
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(model_dir / shard)))
            return state
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{model_dir}: cannot read weights: {e}") from None
    raise ArtifactError(f"{model_dir} has no {WEIGHTS_NAME}: is it a model directory?")


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
