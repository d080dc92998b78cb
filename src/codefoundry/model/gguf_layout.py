"""How each architecture is laid out in GGUF (llama.cpp's names) and in HF (ours): the tables both directions use.

    HF model_type   llama.cpp architecture   tensors that change on the way
    llama           llama                    attn_q, attn_k: rows permuted per head (below)
    gpt_bigcode     starcoder                attn_qkv of multi-head models: HF interleaves q_h k_h v_h per
                                             head, llama.cpp reads [Q | K | V]
    starcoder2      starcoder2               none

llama.cpp's converter (convert_hf_to_gguf.py `LlamaModel.permute`) reorders the rows of each
head of q_proj / k_proj from HF's half-split rotary layout to GGML's interleaved one:

    HF rows of one head:   [x0 x1 … x(d/2-1) | y0 y1 … y(d/2-1)]   (rotate_half pairs x_i with y_i)
    GGUF rows:             [x0 y0 x1 y1 …]

`to_gguf_rows` / `from_gguf_rows` apply and undo it. Metadata keys are `<arch>.<key>`.
"""

from __future__ import annotations

import torch

ARCH_OF_MODEL_TYPE = {"llama": "llama", "gpt_bigcode": "starcoder", "starcoder2": "starcoder2"}
MODEL_TYPE_OF_ARCH = {v: k for k, v in ARCH_OF_MODEL_TYPE.items()}

_ROTARY_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_norm.bias": "input_layernorm.bias",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.bias": "post_attention_layernorm.bias",
}
_LLAMA_MLP = {f"ffn_{g}.{w}": f"mlp.{g}_proj.{w}" for g in ("gate", "up", "down") for w in ("weight", "bias")}
_STARCODER2_MLP = {"ffn_up.weight": "mlp.c_fc.weight", "ffn_up.bias": "mlp.c_fc.bias",
                   "ffn_down.weight": "mlp.c_proj.weight", "ffn_down.bias": "mlp.c_proj.bias"}
_ROTARY_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                  "output_norm.bias": "model.norm.bias", "output.weight": "lm_head.weight"}
_STARCODER_LAYER = {
    "attn_norm.weight": "ln_1.weight", "attn_norm.bias": "ln_1.bias",
    "attn_qkv.weight": "attn.c_attn.weight", "attn_qkv.bias": "attn.c_attn.bias",
    "attn_output.weight": "attn.c_proj.weight", "attn_output.bias": "attn.c_proj.bias",
    "ffn_norm.weight": "ln_2.weight", "ffn_norm.bias": "ln_2.bias",
    "ffn_up.weight": "mlp.c_fc.weight", "ffn_up.bias": "mlp.c_fc.bias",
    "ffn_down.weight": "mlp.c_proj.weight", "ffn_down.bias": "mlp.c_proj.bias",
}
_STARCODER_GLOBAL = {"token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
                     "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias",
                     "output.weight": "lm_head.weight"}

_LAYOUTS = {
    "llama": (_ROTARY_GLOBAL, "model.layers", {**_ROTARY_LAYER, **_LLAMA_MLP}),
    "starcoder2": (_ROTARY_GLOBAL, "model.layers", {**_ROTARY_LAYER, **_STARCODER2_MLP}),
    "starcoder": (_STARCODER_GLOBAL, "transformer.h", _STARCODER_LAYER),
}


def tensor_names(arch: str, n_layer: int) -> dict[str, str]:
    """GGUF tensor name → HF parameter name, for every tensor `arch` may hold."""
    global_names, prefix, layer = _LAYOUTS[arch]
    names = dict(global_names)
    for i in range(n_layer):
        names.update({f"blk.{i}.{g}": f"{prefix}.{i}.{h}" for g, h in layer.items()})
    return names


def to_gguf_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF q_proj/k_proj rows ([n_head * hd, …]) → llama.cpp's per-head interleaved rotary order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def from_gguf_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo `to_gguf_rows`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def qkv_to_blocks(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF multi-head c_attn rows `[q_0 k_0 v_0 | q_1 k_1 v_1 | …]` → `[Q | K | V]`."""
    return w.reshape(n_head, 3, w.shape[0] // n_head // 3, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def qkv_from_blocks(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo `qkv_to_blocks`."""
    return w.reshape(3, n_head, w.shape[0] // n_head // 3, *w.shape[1:]).transpose(0, 1).reshape(w.shape)
