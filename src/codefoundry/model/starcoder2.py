"""StarCoder2 (BigCode's second generation) as a plain torch module.

Follows HF `transformers/models/starcoder2/modeling_starcoder2.py`; the module tree and
parameter names are HF's:

    model.embed_tokens, model.layers.{i}.{input_layernorm, self_attn.{q,k,v,o}_proj,
    post_attention_layernorm, mlp.{c_fc, c_proj}}, model.norm, lm_head (tied by default)

Pre-LN blocks with LayerNorm (with bias), rotary positions, grouped-query attention, biases on
every projection (`use_bias`), a GELU MLP, and a `sliding_window`: each token attends to at
most that many positions (itself included). Attention, RoPE and the two forward paths are
shared with Llama in `codefoundry.model.rotary`; the paged cache keeps every token and the
window is applied as a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codefoundry.errors import ConfigError
from codefoundry.model.rotary import (
    ACT_FNS,
    RotaryAttention,
    RotaryConfig,
    RotaryDecoderLayer,
    RotaryForCausalLM,
    RotaryModel,
)


@dataclass
class Starcoder2Config(RotaryConfig):
    """HF `Starcoder2Config`'s fields and defaults (configuration_starcoder2.py; bigcode/starcoder2-15b's shape)."""

    model_type = "starcoder2"
    architecture = "Starcoder2ForCausalLM"

    vocab_size: int = 49152
    hidden_size: int = 3072
    intermediate_size: int = 12288
    num_hidden_layers: int = 30
    num_attention_heads: int = 24
    num_key_value_heads: int | None = 2
    hidden_act: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.018042
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    tie_word_embeddings: bool = True
    norm_epsilon: float = 1e-5
    use_bias: bool = True
    sliding_window: int | None = None           # None: full causal attention
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(f"sliding_window must be >= 1 or null, got {self.sliding_window}")


class Starcoder2MLP(nn.Module):
    def __init__(self, config: Starcoder2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.use_bias)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.use_bias)
        self.act = ACT_FNS[config.hidden_act]
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Starcoder2DecoderLayer(RotaryDecoderLayer):
    def __init__(self, config: Starcoder2Config) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.norm_epsilon)
        self.self_attn = RotaryAttention(config, bias=config.use_bias, window=config.sliding_window,
                                         residual_dropout=config.residual_dropout)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.norm_epsilon)
        self.mlp = Starcoder2MLP(config)


class Starcoder2Model(RotaryModel):
    def __init__(self, config: Starcoder2Config) -> None:
        super().__init__(config, embedding_dropout=config.embedding_dropout)
        self.layers = nn.ModuleList(Starcoder2DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_epsilon)


class Starcoder2ForCausalLM(RotaryForCausalLM):
    def __init__(self, config: Starcoder2Config) -> None:
        super().__init__()
        self.config = config
        self.model = Starcoder2Model(config)
        self._finish_init()
