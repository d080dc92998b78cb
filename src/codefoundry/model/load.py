"""Where a model is read from: a model directory, or a `.gguf` file standing in for one.

A `.gguf` file is imported once into a cache directory (`codefoundry.model.gguf_import`) and read
from there, so every stage that takes a model directory takes a GGUF file too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from codefoundry.model.checkpoint import CausalLM, ModelConfig, read_config, read_model
from codefoundry.model.gguf_import import imported_dir, q4_linear_weights
from codefoundry.model.quantize import QuantizeMode, quantize_model


def resolve_model_path(path: str | Path) -> Path:
    """A model directory for `path`: itself, or for a `.gguf` file the directory it imports to (cached)."""
    path = Path(path)
    if _is_gguf(path):
        return imported_dir(path)
    return path


def load_config(path: str | Path) -> ModelConfig:
    """The config of the model at `path` (a directory or a `.gguf` file); `model_type` picks its class."""
    return read_config(resolve_model_path(path))


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
               quantize: QuantizeMode | None = None) -> CausalLM:
    """The model at `path` (a directory, ours or saved by transformers, or a `.gguf` file) in eval mode.

    `quantize` ("int8", "int4") makes its linear layers weight-only quantized (`model.quantize`).
    With "int4", a `.gguf` file's Q4_0 / Q4_1 matrices keep the file's own 4-bit values and block
    scales (llama.cpp computes with exactly these), instead of being requantized from fp32.
    """
    model = read_model(resolve_model_path(path), dtype, device)
    if not quantize:
        return model
    gguf_q4 = q4_linear_weights(path) if quantize == "int4" and _is_gguf(path) else None
    return quantize_model(model, quantize, int4_weights=gguf_q4)


def _is_gguf(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix.lower() == ".gguf" and not path.is_dir()
