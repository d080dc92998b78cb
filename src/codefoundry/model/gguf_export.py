"""HF model directories → GGUF files that llama.cpp and Ollama run.

`export_gguf(DIR, FILE, "f16" | "q8_0")` writes llama.cpp's architecture for the model
(`gguf_layout`: GPTBigCode is `starcoder`, Llama is `llama`, StarCoder2 is `starcoder2`),
the metadata its loader reads, the tokenizer (`gguf_tokenizer`), and the weights as
llama.cpp's converter does: 1-D tensors (norms, biases) in F32, matrices in F16 or Q8_0
(Q8_0 needs rows that are a multiple of 32 long; others stay F16). Llama's q/k rows are
permuted into GGML's rotary order and multi-head GPTBigCode's fused qkv into [Q | K | V].
llama.cpp's `starcoder` graph uses the tanh GELU: a GPTBigCode with erf GELU (`activation_function:
gelu`, the starcoder-15b preset) runs there with that small difference. Not exported: Llama 3's
rope scaling (llama.cpp wants a `rope_freqs` tensor) — an error names the supported ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codefoundry.errors import ArtifactError, UserError
from codefoundry.model.gguf_layout import ARCH_OF_MODEL_TYPE, qkv_to_blocks, tensor_names, to_gguf_rows
from codefoundry.model.gguf_tokenizer import gguf_tokenizer_metadata

EXPORT_TYPES = ("f16", "q8_0", "q4_0", "q4_1")


def export_gguf(model_dir: str | Path, out_file: str | Path, weight_type: str = "f16", *,
                overwrite: bool = False) -> Path:
    """Write the model in `model_dir` to GGUF file `out_file`, matrices in `weight_type`; return the file."""
    import gguf

    from codefoundry.model.checkpoint import read_model

    if weight_type not in EXPORT_TYPES:
        raise UserError(f"--type {weight_type!r} is not one of {', '.join(EXPORT_TYPES)}")
    model_dir, out = Path(model_dir), Path(out_file)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists", "pass --overwrite to replace it")
    model = read_model(model_dir)
    config = model.config
    model_type = config.to_hf_dict()["model_type"]
    arch = ARCH_OF_MODEL_TYPE[model_type]
    tokenizer = gguf_tokenizer_metadata(model_dir, config.vocab_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial"
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        writer.add_name(model_dir.resolve().name)
        writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{weight_type.upper()}"))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hparams(writer, arch, config)
        _add_tokenizer(writer, tokenizer)
        names = {hf: g for g, hf in tensor_names(arch, config.n_layer).items()}
        for key, tensor in model.state_dict().items():
            if key in model.tied_weights:
                continue
            name = names[key]
            w = _to_llama_cpp_layout(arch, config, name, tensor.detach().float())
            _add_tensor(writer, gguf, name, w, weight_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


def _to_llama_cpp_layout(arch: str, config: Any, name: str, w: torch.Tensor) -> torch.Tensor:
    if arch == "llama" and name.endswith(("attn_q.weight", "attn_q.bias")):
        return to_gguf_rows(w, config.num_attention_heads)
    if arch == "llama" and name.endswith(("attn_k.weight", "attn_k.bias")):
        return to_gguf_rows(w, config.num_key_value_heads)
    if arch == "starcoder" and name.endswith(("attn_qkv.weight", "attn_qkv.bias")) and not config.multi_query:
        return qkv_to_blocks(w, config.n_head)
    return w


def _add_tensor(writer: Any, gguf: Any, name: str, w: torch.Tensor, weight_type: str) -> None:
    data = w.numpy()
    if data.ndim == 1 or name == "position_embd.weight":
        writer.add_tensor(name, data.astype(np.float32 if data.ndim == 1 else np.float16))
    elif weight_type != "f16" and data.shape[-1] % 32 == 0:      # every type here has blocks of 32
        # as llama.cpp's Q4 files do, the token embedding and output matrix stay Q8_0
        kind = "q8_0" if name in ("token_embd.weight", "output.weight") else weight_type
        qtype = gguf.GGMLQuantizationType[kind.upper()]
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def _add_hparams(writer: Any, arch: str, config: Any) -> None:
    """The `<arch>.*` keys llama.cpp's loader reads for this architecture."""
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_vocab_size(config.vocab_size)
    if arch == "starcoder":
        writer.add_feed_forward_length(config.inner_dim)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_rope_dimension_count(config.head_dim)
    if config.head_dim * config.num_attention_heads != config.hidden_size:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    scaling = config.rope_scaling
    if scaling is not None and scaling["rope_type"] == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])
    elif scaling is not None:
        raise ArtifactError(f"rope_scaling {scaling['rope_type']!r} cannot be exported to GGUF here; "
                            "supported: default, linear")
    if arch == "llama":
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    else:
        writer.add_layer_norm_eps(config.norm_epsilon)
        if config.sliding_window is not None:
            writer.add_sliding_window(config.sliding_window)


def _add_tokenizer(writer: Any, meta: dict[str, Any]) -> None:
    writer.add_tokenizer_model(meta["model"])
    writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["token_type"])
    writer.add_token_merges(meta["merges"])
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "unknown": writer.add_unk_token_id, "padding": writer.add_pad_token_id}
    for key, add in adders.items():
        if meta.get(f"{key}_token_id") is not None:
            add(meta[f"{key}_token_id"])
    writer.add_add_bos_token(meta["add_bos_token"])
    if meta.get("chat_template"):
        writer.add_chat_template(meta["chat_template"])
