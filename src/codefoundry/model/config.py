"""`GPTBigCodeConfig`: the model's shape, with field names that are HF `config.json` keys.

Defaults follow HF `GPTBigCodeConfig` (configuration_gpt_bigcode.py) except where a preset
says otherwise. `preset(name, vocab_size)` gives the shapes codefoundry uses and the shapes of
the released BigCode models (reference/model.md §1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from codefoundry.errors import ConfigError

VOCAB_MULTIPLE = 64
"""The embedding is padded to a multiple of 64 (nanoGPT: 50257 → 50304) for faster matmuls."""

# HF accepts these aliases in config.json (GPTBigCodeConfig.attribute_map).
HF_ALIASES = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
              "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}


def padded_vocab_size(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """`n` rounded up to a multiple of `multiple` (49152 stays 49152, 8211 becomes 8256)."""
    return -(-n // multiple) * multiple


@dataclass
class GPTBigCodeConfig:
    """The shape and numerics of a GPTBigCode model; every field is a key of HF's config.json."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None              # None: 4 * n_embd
    activation_function: str = "gelu_pytorch_tanh"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    use_cache: bool = True
    bos_token_id: int = 0                   # StarCoder: <|endoftext|> = 0 is both bos and eos
    eos_token_id: int = 0
    attention_softmax_in_fp32: bool = True
    scale_attention_softmax_in_fp32: bool = True
    multi_query: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(f"activation_function {self.activation_function!r} is not one of "
                              f"{', '.join(ACTIVATIONS)}")
        if not self.tie_word_embeddings:
            raise ConfigError("GPTBigCode ties lm_head to wte; tie_word_embeddings=false is not supported")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def num_kv_heads(self) -> int:
        """1 for multi-query attention, n_head for multi-head attention."""
        return 1 if self.multi_query else self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` contents transformers expects for this model."""
        return {
            "architectures": ["GPTBigCodeForCausalLM"],
            "model_type": "gpt_bigcode",
            **dataclasses.asdict(self),
        }

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> GPTBigCodeConfig:
        """Read an HF `config.json` mapping (aliases accepted, unrelated keys ignored)."""
        model_type = data.get("model_type", "gpt_bigcode")
        if model_type != "gpt_bigcode":
            raise ConfigError(f"config.json has model_type {model_type!r}; codefoundry.model reads 'gpt_bigcode'")
        if data.get("add_cross_attention"):
            raise ConfigError("config.json asks for cross-attention, which GPTBigCode decoders here do not have")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {HF_ALIASES.get(k, k): v for k, v in data.items()}
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **changes: Any) -> GPTBigCodeConfig:
        return dataclasses.replace(self, **changes)

    def num_parameters(self) -> int:
        """Parameters of GPTBigCodeForCausalLM with this config (lm_head tied, so not counted twice)."""
        d, f, kv = self.n_embd, self.inner_dim, self.num_kv_heads * self.head_dim
        attn = d * (d + 2 * kv) + (d + 2 * kv) + d * d + d
        mlp = d * f + f + f * d + d
        block = attn + mlp + 4 * d
        return self.vocab_size * d + self.n_positions * d + self.n_layer * block + 2 * d


ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "gelu_new", "gelu_fast", "relu")

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}

PRESETS: dict[str, dict[str, Any]] = {
    # tests: a few hundred thousand parameters (with an 8K vocab), milliseconds per step
    "tiny": dict(n_positions=512, n_embd=64, n_layer=2, n_head=4, **NO_DROPOUT),
    # the demo: ~6M non-embedding parameters, trains on 2 CPU cores
    "small": dict(n_positions=1024, n_embd=256, n_layer=6, n_head=8, **NO_DROPOUT),
    # StarCoder's 8K context on a narrow model: long-context tests and memory measurements
    "long": dict(n_positions=8192, n_embd=128, n_layer=2, n_head=4, **NO_DROPOUT),
    # GPT-2 small's shape (124M) with MQA: 111M at a 49K vocabulary; the GPU MFU measurement (bench/train.py mfu)
    "125m": dict(n_positions=2048, n_embd=768, n_layer=12, n_head=12),
    # bigcode/gpt_bigcode-santacoder config.json (its 49157-token vocab was padded to 49280)
    "santacoder-1b": dict(n_positions=2048, n_embd=2048, n_layer=24, n_head=16, n_inner=8192),
    # bigcode/starcoderbase config.json: erf GELU, 8K context
    "starcoder-15b": dict(n_positions=8192, n_embd=6144, n_layer=40, n_head=48, n_inner=24576,
                          activation_function="gelu"),
}


def preset(name: str, vocab_size: int) -> GPTBigCodeConfig:
    """The config of preset `name`, with the tokenizer's `vocab_size` padded to a multiple of 64."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return GPTBigCodeConfig(vocab_size=padded_vocab_size(vocab_size), **PRESETS[name])
