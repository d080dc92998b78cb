"""Llama (CodeLlama, DeepSeek-Coder, SmolLM2, Llama 3, …) as a plain torch module.

Follows HF `transformers/models/llama/modeling_llama.py`; the module tree and parameter names
are HF's, so `config.json` + `model.safetensors` load both ways and PEFT targets match:

    model.embed_tokens, model.layers.{i}.{input_layernorm, self_attn.{q,k,v,o}_proj,
    post_attention_layernorm, mlp.{gate_proj, up_proj, down_proj}}, model.norm, lm_head

Pre-norm blocks with RMSNorm, rotary positions (`rope_scaling`: default, linear, llama3),
grouped-query attention (`num_key_value_heads`), a SwiGLU MLP, and an lm_head that is tied
to the embedding or not (`tie_word_embeddings`). Attention, RoPE and the two forward paths
(training and paged generation) are shared with StarCoder2 in `codefoundry.model.rotary`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codefoundry.model.rotary import (
    ACT_FNS,
    RotaryAttention,
    RotaryConfig,
    RotaryDecoderLayer,
    RotaryForCausalLM,
    RotaryModel,
)


@dataclass
class LlamaConfig(RotaryConfig):
    """HF `LlamaConfig`'s fields and defaults (configuration_llama.py)."""

    model_type = "llama"
    architecture = "LlamaForCausalLM"

    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    mlp_bias: bool = False
    pretraining_tp: int = 1                     # HF's sliced projections for tp > 1 are the same math


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float64:
            # HF's order (normalize in float32, back to x's dtype, then scale) in one fused op instead of eight
            return F.rms_norm(x, self.weight.shape, self.weight, self.variance_epsilon)
        # HF normalizes even float64 in float32 (F.rms_norm would not): kept for parity down to round-off
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)


class LlamaMLP(nn.Module):
    """SwiGLU: down(act(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act = ACT_FNS[config.hidden_act]
        self.gate_up_proj: nn.Module | None = None    # gate and up in one projection (set by `model.quantize`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(self.act(gate) * up)
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(RotaryDecoderLayer):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = RotaryAttention(config, bias=config.attention_bias)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)


class LlamaModel(RotaryModel):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(RotaryForCausalLM):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self._finish_init()
