"""Where a model is read from: a model directory, or a `.gguf` file standing in for one.

A `.gguf` file is imported once into a cache directory (`codefoundry.model.gguf_import`) and read
from there, so every stage that takes a model directory takes a GGUF file too.

A quantized load never holds the whole float model: the model is built on the meta device and
filled one decoder layer at a time from the safetensors file (read tensor by tensor), each
layer quantized before the next is read, so peak memory stays near the quantized size plus
one layer (and, last, the embedding table) in float.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codefoundry.errors import ArtifactError
from codefoundry.model.checkpoint import (
    IGNORED_KEYS,
    IGNORED_SUFFIXES,
    WEIGHTS_NAME,
    CausalLM,
    ModelConfig,
    model_class,
    read_config,
    read_model,
)
from codefoundry.model.gguf_import import imported_dir, q4_linear_weights, read_gguf, read_metadata
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

    `quantize` ("int8", "int4") makes its linear layers weight-only quantized (`model.quantize`),
    layer by layer as they are read (the same values as quantizing the loaded float model).
    With "int4", a `.gguf` file's Q4_0 / Q4_1 matrices keep the file's own 4-bit values and block
    scales (llama.cpp computes with exactly these), instead of being requantized from fp32.
    """
    model_dir = resolve_model_path(path)
    if not quantize:
        return read_model(model_dir, dtype, device)
    gguf_q4 = q4_linear_weights(path) if quantize == "int4" and _is_gguf(path) else None
    return _read_quantized(model_dir, dtype, device, quantize, gguf_q4)


def _read_quantized(model_dir: Path, dtype: torch.dtype, device: torch.device | str, mode: QuantizeMode,
                    int4_weights: Mapping[str, Any] | None) -> CausalLM:
    """`read_model` + `quantize_model`, one decoder layer at a time (see the module docstring)."""
    config = read_config(model_dir)
    with torch.device("meta"):
        model = model_class(config)(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    compute_dtype = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    with _LazyWeights(model_dir) as weights:
        weights.check(expected, model.tied_weights)

        blocks = list(_blocks(model))
        for prefix, block in blocks:
            block.load_state_dict({k: weights.read(prefix + k, dtype, device) for k in block.state_dict()},
                                  strict=True, assign=True)
            quantize_model(block, mode, compute_dtype=compute_dtype,
                           int4_weights=None if int4_weights is None else _Prefixed(int4_weights, prefix))
        # what is left: embeddings, final norm, the output projection (a tied one is the embedding)
        rest = [k for k in expected if k not in model.tied_weights and not k.startswith(tuple(p for p, _ in blocks))]
        model.load_state_dict({k: weights.read(k, dtype, device) for k in rest}, strict=False, assign=True)
        for key, source in model.tied_weights.items():
            owner, _, name = key.rpartition(".")
            setattr(model.get_submodule(owner), name, model.get_parameter(source))
        quantize_model(model, mode, compute_dtype=compute_dtype, int4_weights=int4_weights)
    return model


def _blocks(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """("model.layers.3.", layer) for every element of the model's module lists (its decoder layers)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            for i, block in enumerate(module):
                yield f"{name}.{i}.", block


class _Prefixed(Mapping):
    """The entries of `base` under `prefix`, named relative to it (a layer's view of the model's GGUF blocks)."""

    def __init__(self, base: Mapping[str, Any], prefix: str) -> None:
        self.base, self.prefix = base, prefix

    def __getitem__(self, key: str) -> Any:
        return self.base[self.prefix + key]

    def __iter__(self) -> Iterator[str]:
        return (k[len(self.prefix):] for k in self.base if k.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _LazyWeights:
    """A model directory's safetensors file(s), read one tensor at a time with plain reads.

    Not memory-mapped (as `safe_open` is): a mapped file's pages stay in the process's resident
    set once touched, so the float weights would count in full by the end of a quantized load.
    """

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._stack = ExitStack()
        # key → (open file, offset, safetensors dtype, shape, bytes)
        self._where: dict[str, tuple[Any, int, str, tuple[int, ...], int]] = {}

    def __enter__(self) -> _LazyWeights:
        single = self.model_dir / WEIGHTS_NAME
        index = self.model_dir / f"{WEIGHTS_NAME}.index.json"
        try:
            if single.exists():
                files = [single]
            elif index.exists():                                     # sharded HF checkpoints
                shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
                files = [self.model_dir / s for s in sorted(set(shards))]
            else:
                raise ArtifactError(f"{self.model_dir} has no {WEIGHTS_NAME}: is it a model directory?")
            for file in files:
                self._index(self._stack.enter_context(file.open("rb")), file)
        except (OSError, KeyError, ValueError, TypeError) as e:
            self._stack.close()
            raise ArtifactError(f"{self.model_dir}: cannot read weights: {e}") from None
        for key in [*IGNORED_KEYS, *(k for k in self._where if k.endswith(IGNORED_SUFFIXES))]:
            self._where.pop(key, None)
        return self

    def _index(self, f: Any, file: Path) -> None:
        """The safetensors layout: an 8-byte little-endian header length, a JSON header, the tensors' bytes."""
        size = file.stat().st_size
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length <= size - 8:
            raise ValueError(f"{file.name} has no valid safetensors header")
        header = json.loads(f.read(length))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, stop = info["data_offsets"]
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
            if dtype not in _DTYPES or not 0 <= begin <= stop <= size - 8 - length \
                    or stop - begin != math.prod(shape) * _DTYPES[dtype].itemsize:
                raise ValueError(f"{file.name}: tensor {key} ({dtype} {list(shape)}) does not match its bytes")
            self._where[key] = (f, 8 + length + begin, dtype, shape, stop - begin)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def shape(self, key: str) -> tuple[int, ...]:
        return self._where[key][3]

    def read(self, key: str, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        f, offset, kind, shape, nbytes = self._where[key]
        buf = torch.empty(nbytes, dtype=torch.uint8)
        f.seek(offset)
        if f.readinto(buf.numpy()) != nbytes:
            raise ArtifactError(f"{self.model_dir}: {key} is cut short (truncated file?)")
        return buf.view(_DTYPES[kind]).view(shape).to(device=device, dtype=dtype)

    def check(self, expected: dict[str, tuple[int, ...]], tied: dict[str, str]) -> None:
        """`read_model`'s checks before anything is read: every weight present with its shape, ties honoured."""
        for key, source in tied.items():
            if key in self._where and source in self._where \
                    and not torch.equal(self.read(key, torch.float32, "cpu"), self.read(source, torch.float32, "cpu")):
                raise ArtifactError(f"{self.model_dir}: {key} differs from {source}, but config.json ties "
                                    "them (tie_word_embeddings)")
            self._where.pop(key, None)
        missing = sorted(set(expected) - set(self._where) - set(tied))
        unexpected = sorted(set(self._where) - set(expected))
        if missing or unexpected:
            raise ArtifactError(f"{self.model_dir}/{WEIGHTS_NAME} does not match its config.json: missing "
                                f"{missing[:5]}, unexpected {unexpected[:5]}")
        for name in self._where:
            if self.shape(name) != expected[name]:
                raise ArtifactError(f"{self.model_dir}: {name} has shape {list(self.shape(name))}, config.json "
                                    f"implies {list(expected[name])}")


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def native_quantize(path: str | Path) -> QuantizeMode | None:
    """The weight-only quantization a model file holds its weights in, as llama.cpp computes with them:
    "int4" for a GGUF file of type Q4_0 / Q4_1 (`general.file_type`, or most of its matrices when unset),
    None for every other file and for model directories (float weights)."""
    if not _is_gguf(path):
        return None
    from gguf import GGMLQuantizationType, LlamaFileType

    reader = read_gguf(path)
    file_type = read_metadata(reader, with_tokenizer=False).get("general.file_type")
    if file_type is not None:
        return "int4" if int(file_type) in (LlamaFileType.MOSTLY_Q4_0, LlamaFileType.MOSTLY_Q4_1) else None
    matrices = [t.tensor_type for t in reader.tensors if len(t.shape) == 2]
    q4 = sum(t in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1) for t in matrices)
    return "int4" if matrices and 2 * q4 > len(matrices) else None


def _is_gguf(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix.lower() == ".gguf" and not path.is_dir()
