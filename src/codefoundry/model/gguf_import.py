"""GGUF files (llama.cpp, Ollama) → HF model directories: weights dequantized, tokenizer and chat template rebuilt.

`import_gguf(FILE, DIR)` reads the file with the `gguf` package, checks every size it reads
against the file (a truncated or hostile file is an `ArtifactError`, never a huge
allocation or a traceback), dequantizes each tensor to float32 (F32, F16, BF16, Q8_0, Q4_0,
Q4_1, Q4_K, Q6_K…), renames it to HF's parameter name, undoes llama.cpp's layout changes
(`gguf_layout`), and saves the model with `save_pretrained`, so transformers opens the result.

`imported_dir(FILE)` is what makes a `.gguf` path work wherever a model directory does: it
imports once into `$CODEFOUNDRY_CACHE/gguf/` (default `~/.cache/codefoundry`) and reuses that.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codefoundry.errors import ArtifactError, ConfigError
from codefoundry.model.gguf_layout import MODEL_TYPE_OF_ARCH, from_gguf_rows, qkv_from_blocks, tensor_names
from codefoundry.model.gguf_tokenizer import write_tokenizer_from_gguf

MAGIC = b"GGUF"
TOKENIZER_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


def _supported_types() -> dict[Any, str]:
    from gguf import GGMLQuantizationType as Q

    return {t: t.name for t in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K,
                                Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K)}


def read_gguf(path: str | Path) -> Any:
    """A `gguf.GGUFReader` over `path`; an `ArtifactError` if it is not a readable GGUF file."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != MAGIC:
        raise ArtifactError(f"{path} is not a GGUF file (it starts with {magic!r}, not {MAGIC!r})")
    try:
        return GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, OSError, TypeError, AssertionError) as e:
        raise ArtifactError(f"{path} is not a valid GGUF file (truncated or corrupt?): {e}") from None


def read_metadata(reader: Any, with_tokenizer: bool = True) -> dict[str, Any]:
    """Every key/value of the file as Python values (the big tokenizer arrays only `with_tokenizer`)."""
    meta = {}
    for key, field in reader.fields.items():
        if key in TOKENIZER_KEYS and not with_tokenizer:
            continue
        try:
            meta[key] = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise ArtifactError(f"GGUF metadata {key!r} cannot be read: {e}") from None
    return meta


def _f32(x: float) -> float:
    """A float32 metadata value as the shortest decimal that reads back to it (9.99999975e-06 → 1e-05)."""
    return float(str(np.float32(x)))


def tensor_shapes(reader: Any) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in torch's order (GGUF lists the fastest dimension first)."""
    return {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}


def config_from_gguf(meta: dict[str, Any], tensors: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The HF `config.json` mapping of the model a GGUF file describes (`tensors`: name → shape)."""
    arch = meta.get("general.architecture")
    if arch not in MODEL_TYPE_OF_ARCH:
        raise ArtifactError(f"GGUF architecture {arch!r} is not supported; supported: "
                            f"{', '.join(MODEL_TYPE_OF_ARCH)}")

    def need(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ArtifactError(f"GGUF metadata has no {arch}.{key}")
        if isinstance(value, list):
            raise ArtifactError(f"GGUF metadata {arch}.{key} is per layer, which codefoundry.model does not read")
        return value

    if len(tensors.get("token_embd.weight", ())) != 2:
        raise ArtifactError("GGUF file has no 2-D token_embd.weight tensor")
    vocab = tensors["token_embd.weight"][0]
    ids = {f"{k}_token_id": meta.get(f"tokenizer.ggml.{g}_token_id")
           for k, g in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"))}
    n_head = need("attention.head_count")
    common = dict(vocab_size=vocab, num_hidden_layers=need("block_count"), num_attention_heads=n_head,
                  num_key_value_heads=need("attention.head_count_kv", n_head),
                  hidden_size=need("embedding_length"), intermediate_size=need("feed_forward_length"),
                  max_position_embeddings=need("context_length"), tie_word_embeddings="output.weight" not in tensors,
                  **{k: v for k, v in ids.items() if v is not None})
    if arch == "starcoder":
        return {"model_type": "gpt_bigcode", "vocab_size": vocab, "n_positions": common["max_position_embeddings"],
                "n_embd": common["hidden_size"],
                "n_inner": None if common["intermediate_size"] == 4 * common["hidden_size"]
                else common["intermediate_size"],
                "n_layer": common["num_hidden_layers"], "n_head": n_head,
                "multi_query": common["num_key_value_heads"] == 1,
                "layer_norm_epsilon": _f32(need("attention.layer_norm_epsilon")),
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                **{k: v for k, v in ids.items() if v is not None and k != "pad_token_id"}}
    if "rope_freqs.weight" in tensors:
        raise ArtifactError("GGUF file stores Llama 3.1 rope frequency factors (rope_freqs), which the import "
                            "cannot turn back into rope_scaling; import the HF checkpoint instead")
    rope: dict[str, Any] = {"rope_theta": _f32(need("rope.freq_base", 10000.0))}
    if meta.get(f"{arch}.rope.scaling.type") == "linear":
        rope["rope_scaling"] = {"rope_type": "linear", "factor": _f32(need("rope.scaling.factor"))}
    elif meta.get(f"{arch}.rope.scaling.type") not in (None, "none"):
        raise ArtifactError(f"GGUF {arch}.rope.scaling.type {meta[f'{arch}.rope.scaling.type']!r} is not "
                            "supported; supported: none, linear")
    head_dim = meta.get(f"{arch}.attention.key_length")
    if arch == "llama":
        return {"model_type": "llama", **common, **rope, **({"head_dim": head_dim} if head_dim else {}),
                "rms_norm_eps": _f32(need("attention.layer_norm_rms_epsilon")),
                "attention_bias": "blk.0.attn_q.bias" in tensors, "mlp_bias": "blk.0.ffn_up.bias" in tensors}
    return {"model_type": "starcoder2", **common, **rope, "norm_epsilon": _f32(need("attention.layer_norm_epsilon")),
            "use_bias": "blk.0.attn_q.bias" in tensors, "sliding_window": meta.get(f"{arch}.attention.sliding_window")}


def dequantize(tensor: Any) -> torch.Tensor:
    """One GGUF tensor as float32, in torch's [out, in] order; its sizes checked against its bytes."""
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import dequantize as gguf_dequantize

    supported = _supported_types()
    if tensor.tensor_type not in supported:
        raise ArtifactError(f"GGUF tensor {tensor.name} has type {tensor.tensor_type.name}; supported: "
                            f"{', '.join(supported.values())}")
    shape = tuple(int(d) for d in reversed(tensor.shape))              # GGUF lists the fastest dimension first
    count = math.prod(shape)
    block, type_size = GGML_QUANT_SIZES[tensor.tensor_type]
    if count != int(tensor.n_elements) or shape[-1] % block or tensor.data.nbytes != count // block * type_size:
        raise ArtifactError(f"GGUF tensor {tensor.name}: shape {list(shape)} does not match its "
                            f"{tensor.data.nbytes} bytes of {tensor.tensor_type.name}")
    values = gguf_dequantize(np.asarray(tensor.data), tensor.tensor_type)
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))   # a copy: the file is a read-only map


def import_gguf(path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write the model in GGUF file `path` as an HF model directory `out_dir` (float32 weights); return it.

    The directory appears whole or not at all: it is built beside `out_dir` and renamed.
    """
    from codefoundry.model.checkpoint import ARCHITECTURES, save_pretrained

    path, out = Path(path), Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(f"{out} already exists and is not empty", "pass --overwrite to replace it")
    reader = read_gguf(path)
    meta = read_metadata(reader)
    by_name = {t.name: t for t in reader.tensors}
    hf = config_from_gguf(meta, tensor_shapes(reader))
    config_cls, model_cls = ARCHITECTURES[hf["model_type"]]
    try:
        config = config_cls.from_hf_dict(hf)
    except (ConfigError, TypeError) as e:
        raise ArtifactError(f"{path}: its metadata describes no valid model: {e}") from None
    arch = meta["general.architecture"]
    names = tensor_names(arch, config.n_layer)
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise ArtifactError(f"{path}: tensors {unknown[:5]} are not part of a {arch} model here")
    with torch.device("meta"):
        model = model_cls(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    for name, tensor in by_name.items():
        key = names[name]
        if key not in expected:
            raise ArtifactError(f"{path}: tensor {name} ({key}) does not belong in this configuration")
        w = dequantize(tensor)
        if w.shape != expected[key]:
            raise ArtifactError(f"{path}: tensor {name} has shape {list(w.shape)}, the metadata implies "
                                f"{list(expected[key])}")
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_q.bias")):
            w = from_gguf_rows(w, config.num_attention_heads)
        elif arch == "llama" and name.endswith(("attn_k.weight", "attn_k.bias")):
            w = from_gguf_rows(w, config.num_key_value_heads)
        elif arch == "starcoder" and name.endswith(("attn_qkv.weight", "attn_qkv.bias")) and not config.multi_query:
            w = qkv_from_blocks(w, config.n_head)
        state[key] = w
    missing = sorted(set(expected) - set(state) - set(model.tied_weights))
    if missing:
        raise ArtifactError(f"{path}: the file lacks tensors {missing[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    for key, source in model.tied_weights.items():
        owner, _, attr = key.rpartition(".")
        setattr(model.get_submodule(owner), attr, model.get_parameter(source))

    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_tokenizer_from_gguf(meta, tmp, config.n_positions)
        source = {"gguf": str(path.resolve()), "sha256": _sha256(path), "architecture": arch,
                  "name": meta.get("general.name"), "file_type": meta.get("general.file_type"),
                  "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors))}
        save_pretrained(model, tmp, extra={"source": source})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("CODEFOUNDRY_CACHE") or Path.home() / ".cache" / "codefoundry")


def imported_dir(path: str | Path) -> Path:
    """The model directory of GGUF file `path`, imported on first use and cached (keyed by path, size, mtime)."""
    from filelock import FileLock

    path = Path(path)
    try:
        stat = path.stat()
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}") from None
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = cache_root() / "gguf"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{path.stem}-{key}"
    with FileLock(str(root / f"{target.name}.lock")):
        if not (target / "config.json").exists():
            import_gguf(path, target, overwrite=True)
    return target


def q4_blocks(tensor: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A Q4_0 or Q4_1 tensor's blocks of 32, undequantized: q [N, K] uint8 in [0, 15], d and m [N, K / 32].

    Q4_0: w = d · (q - 8), m is None; Q4_1: w = d · q + m. Each block is `d` (float16), for Q4_1
    `m` (float16), then 16 bytes whose low nibbles are the block's first 16 values and high
    nibbles its last 16 (gguf's own dequantizer reads them so).
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    n, k = (int(d) for d in reversed(tensor.shape))
    block, type_size = GGML_QUANT_SIZES[tensor.tensor_type]
    if tensor.data.nbytes != n * k // block * type_size:
        raise ArtifactError(f"GGUF tensor {tensor.name}: shape {[n, k]} does not match its "
                            f"{tensor.data.nbytes} bytes of {tensor.tensor_type.name}")
    raw = np.asarray(tensor.data).reshape(n * k // block, type_size)
    has_min = tensor.tensor_type == GGMLQuantizationType.Q4_1
    head = 4 if has_min else 2
    d = torch.from_numpy(raw[:, :2].copy().view(np.float16).astype(np.float32)).view(n, k // block)
    m = torch.from_numpy(raw[:, 2:4].copy().view(np.float16).astype(np.float32)).view(n, k // block) \
        if has_min else None
    qs = torch.from_numpy(raw[:, head:].copy())                                   # [blocks, 16]
    q = torch.cat((qs & 15, qs >> 4), dim=1).view(n, k)
    return q, d, m


def q4_linear_weights(path: str | Path) -> Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Each Q4_0 / Q4_1 matrix of GGUF file `path` as `q4_blocks`, keyed by HF parameter name, in HF's row order.

    What `--quantize int4` reads instead of requantizing the dequantized weights: the file's own
    4-bit values and block scales (llama.cpp's row order undone the way `import_gguf` does).
    A mapping that decodes a matrix when it is looked up, so a layer-by-layer load holds one at a time.
    """
    from gguf import GGMLQuantizationType as Q

    reader = read_gguf(path)
    meta = read_metadata(reader, with_tokenizer=False)
    arch = meta.get("general.architecture")
    if arch not in MODEL_TYPE_OF_ARCH:
        return {}
    n_layer = int(meta.get(f"{arch}.block_count", 0))
    n_head = int(meta.get(f"{arch}.attention.head_count", 0))
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
    names = tensor_names(arch, n_layer)
    tensors = {names[t.name]: t for t in reader.tensors
               if t.tensor_type in (Q.Q4_0, Q.Q4_1) and len(t.shape) == 2 and t.name in names}
    return _Q4Matrices(tensors, arch, n_head, kv_heads)


class _Q4Matrices(Mapping):
    """HF parameter name → `q4_blocks` of that GGUF tensor, decoded on each lookup."""

    def __init__(self, tensors: dict[str, Any], arch: str, n_head: int, kv_heads: int) -> None:
        self.tensors, self.arch, self.n_head, self.kv_heads = tensors, arch, n_head, kv_heads

    def __getitem__(self, key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        tensor = self.tensors[key]
        q, d, m = q4_blocks(tensor)
        heads = None
        if self.arch == "llama" and tensor.name.endswith("attn_q.weight"):
            heads = self.n_head
        elif self.arch == "llama" and tensor.name.endswith("attn_k.weight"):
            heads = self.kv_heads
        if heads is not None:
            return from_gguf_rows(q, heads), from_gguf_rows(d, heads), None if m is None else from_gguf_rows(m, heads)
        if self.arch == "starcoder" and tensor.name.endswith("attn_qkv.weight") and self.kv_heads != 1:
            return (qkv_from_blocks(q, self.n_head), qkv_from_blocks(d, self.n_head),
                    None if m is None else qkv_from_blocks(m, self.n_head))
        return q, d, m

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)
