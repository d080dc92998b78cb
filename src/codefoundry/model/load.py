"""Where a model is read from: a model directory, or a `.gguf` file standing in for one.

A `.gguf` file is imported once into a cache directory (`codefoundry.model.gguf_import`) and read
from there, so every stage that takes a model directory takes a GGUF file too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from codefoundry.model.checkpoint import CausalLM, ModelConfig, read_config, read_model
from codefoundry.model.gguf_import import imported_dir
from codefoundry.model.quantize import QuantizeMode, quantize_model


def resolve_model_path(path: str | Path) -> Path:
    """A model directory for `path`: itself, or for a `.gguf` file the directory it imports to (cached)."""
    path = Path(path)
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        return imported_dir(path)
    return path


def load_config(path: str | Path) -> ModelConfig:
    """The config of the model at `path` (a directory or a `.gguf` file); `model_type` picks its class."""
    return read_config(resolve_model_path(path))


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
               quantize: QuantizeMode | None = None) -> CausalLM:
    """The model at `path` (a directory, ours or saved by transformers, or a `.gguf` file) in eval mode.

    `quantize` ("int8", "int4") makes its linear layers weight-only quantized (`model.quantize`).
    """
    model = read_model(resolve_model_path(path), dtype, device)
    return quantize_model(model, quantize) if quantize else model
