"""What the RoPE decoders (Llama, StarCoder2) share: their config base, rotary embeddings, attention, the trunk.

Follows HF `modeling_llama.py` / `modeling_starcoder2.py` and `modeling_rope_utils.py`
(names, layouts, and the float32 rotary tables), so parity with transformers holds to float64
round-off. Module names are HF's:

    model.embed_tokens, model.layers.{i}.self_attn.{q_proj, k_proj, v_proj, o_proj},
    model.layers.{i}.<norms and mlp: per architecture>, model.norm, lm_head

Each architecture file (`llama.py`, `starcoder2.py`) adds only its norms, MLP and decoder
layer; this file holds the attention over `codefoundry.model.paged` and the two forward paths
shared with `gpt_bigcode.py`: `model(input_ids[B, T])` (training, causal SDPA) and
`model.forward_paged(input_ids[N], positions[N], attn, kv_caches)` (generation).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from codefoundry.errors import ConfigError
from codefoundry.model.loss import causal_lm_loss
from codefoundry.model.paged import PagedAttention, paged_attention, write_kv

ROPE_TYPES = {"default": (), "linear": ("factor",),
              "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
"""Supported `rope_scaling` types and the keys each needs (HF `modeling_rope_utils.ROPE_INIT_FUNCTIONS`)."""


@dataclass
class RotaryConfig:
    """Fields every RoPE decoder's `config.json` has (HF names); subclasses set HF's defaults and add their own."""

    model_type: ClassVar[str] = ""
    architecture: ClassVar[str] = ""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None      # None: num_attention_heads (multi-head attention)
    head_dim: int | None = None                 # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "linear" | "llama3", "factor": …, …}; None: default
    attention_dropout: float = 0.0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2                # a list in config.json becomes its first id (the engine wants one)
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                                  f"({self.num_attention_heads})")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                              f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        if self.hidden_act not in ACT_FNS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not one of {', '.join(ACT_FNS)}")
        self.rope_scaling = _check_rope_scaling(self.rope_scaling)

    # the names the engine, server and trainer read (GPTBigCode's), for every architecture
    @property
    def n_positions(self) -> int:
        return self.max_position_embeddings

    @property
    def n_layer(self) -> int:
        return self.num_hidden_layers

    @property
    def n_embd(self) -> int:
        return self.hidden_size

    @property
    def n_head(self) -> int:
        return self.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return self.num_key_value_heads

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` contents transformers expects (RoPE in the `rope_theta` + `rope_scaling` form)."""
        return {"architectures": [self.architecture], "model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> RotaryConfig:
        """Read an HF `config.json` mapping: transformers 4's `rope_theta`/`rope_scaling` or 5's `rope_parameters`."""
        values = dict(data)
        params = values.pop("rope_parameters", None)
        if isinstance(params, dict) and params:
            params = dict(params)
            values.setdefault("rope_theta", params.pop("rope_theta", cls.rope_theta))
            kind = params.get("rope_type", params.get("type", "default"))
            values["rope_scaling"] = None if kind == "default" else params
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = values["eos_token_id"][0] if values["eos_token_id"] else None
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as e:
            raise ConfigError(f"config.json: {e}") from None

    def replace(self, **changes: Any) -> RotaryConfig:
        return dataclasses.replace(self, **changes)


def _check_rope_scaling(scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """`rope_scaling` with `rope_type` set (HF's old `type` key accepted); None for plain RoPE."""
    if not scaling:
        return None
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling must be a mapping or null, got {scaling!r}")
    scaling = {k: v for k, v in scaling.items() if k != "type"} | {
        "rope_type": scaling.get("rope_type", scaling.get("type", "default"))}
    kind = scaling["rope_type"]
    if kind not in ROPE_TYPES:
        raise ConfigError(f"rope_scaling type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    missing = [k for k in ROPE_TYPES[kind] if k not in scaling]
    if missing:
        raise ConfigError(f"rope_scaling of type {kind!r} needs {', '.join(missing)}")
    return None if kind == "default" else scaling


ACT_FNS = {
    "silu": F.silu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


def rope_inverse_frequencies(config: RotaryConfig) -> torch.Tensor:
    """[head_dim / 2] float32 inverse frequencies, scaled as `config.rope_scaling` says (HF's formulas)."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling or {"rope_type": "default"}
    if scaling["rope_type"] == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif scaling["rope_type"] == "llama3":
        # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_context / low, old_context / high
        wavelen = 2 * math.pi / inv_freq
        slowed = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * slowed / factor + smooth * slowed
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, slowed)
    return inv_freq


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the given positions; computed in float32 like HF, then cast to the activations' dtype."""

    def __init__(self, config: RotaryConfig) -> None:
        super().__init__()
        self.config = config
        self._inv_freq: dict[torch.device, torch.Tensor] = {}   # not a buffer: no dtype casts, no meta tensors
        self._signs: dict[torch.device, torch.Tensor] = {}

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [...] → cos, signed sin [..., 1, head_dim] (see `apply_rotary`), once for every layer."""
        device = positions.device
        if device not in self._inv_freq:
            half = self.config.head_dim // 2
            self._inv_freq[device] = rope_inverse_frequencies(self.config).to(device)
            self._signs[device] = torch.cat((torch.full((half,), -1.0), torch.ones(half))).to(device)
        freqs = positions[..., None, None].float() * self._inv_freq[device]      # (..., 1, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)                                 # (..., 1, hd)
        # -sin on the first half: x·cos + rotate_half(x)·sin = x·cos + swap_halves(x)·signed_sin, exactly
        return emb.cos().to(dtype), (emb.sin() * self._signs[device]).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF's rotate_half: [x1 | x2] → [-x2 | x1] (the reference `apply_rotary` is checked against)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., heads, hd] by `RotaryEmbedding`'s cos / signed sin [..., 1, hd] (HF's half-split layout).

    HF's `x·cos + rotate_half(x)·sin` in three ops: rotate_half(x)·sin = swap_halves(x)·signed_sin,
    the half swap one `flip` of a [2, hd/2] view (a sign flip is exact, so the numbers are HF's).
    """
    hd = x.shape[-1]
    swapped = x.unflatten(-1, (2, hd // 2)).flip(-2).flatten(-2)
    return torch.addcmul(x * cos, swapped, signed_sin)


class RotaryAttention(nn.Module):
    """HF's `LlamaAttention` / `Starcoder2Attention`: separate q/k/v/o projections, GQA, RoPE, optional window."""

    def __init__(self, config: RotaryConfig, bias: bool, window: int | None = None,
                 residual_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_head, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.hidden_size, bias=bias)
        self.scale = self.head_dim ** -0.5
        self.window = window
        self.attention_dropout = config.attention_dropout
        self.resid_dropout = nn.Dropout(residual_dropout)
        # q, k, v in one projection (set by `model.quantize`, which then drops q/k/v_proj): one kernel call
        self.qkv_proj: nn.Module | None = None

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., C] → q [..., H, hd], k, v [..., kv_heads, hd], q and k rotated."""
        lead = x.shape[:-1]
        if self.qkv_proj is not None:
            qk, v = self.qkv_proj(x).view(*lead, self.n_head + 2 * self.kv_heads, self.head_dim).split(
                (self.n_head + self.kv_heads, self.kv_heads), dim=-2)
        else:
            q = self.q_proj(x).view(*lead, self.n_head, self.head_dim)
            k = self.k_proj(x).view(*lead, self.kv_heads, self.head_dim)
            v = self.v_proj(x).view(*lead, self.kv_heads, self.head_dim)
            qk = torch.cat((q, k), dim=-2)
        # q and k rotated together: one set of elementwise ops instead of two (the same numbers)
        q, k = apply_rotary(qk, cos, sin).split((self.n_head, self.kv_heads), dim=-2)
        return q, k, v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)                          # (B, T, H, hd), (B, T, kv, hd) ×2
        if v.dtype != q.dtype:       # a quantized qkv_proj answers in bf16; the float32 rotation promoted q and k
            v = v.to(q.dtype)
        mask = None
        if self.window is not None and self.window < T:          # causal and at most `window` keys back
            i = torch.arange(T, device=x.device)
            mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - self.window)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=mask is None,
            scale=self.scale, dropout_p=self.attention_dropout if self.training else 0.0,
            enable_gqa=self.kv_heads != self.n_head)             # (B, H, T, hd)
        return self.resid_dropout(self.o_proj(y.transpose(1, 2).reshape(B, T, -1)))

    def forward_paged(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
                      attn: PagedAttention) -> torch.Tensor:
        N = x.shape[0]
        q, k, v = self.qkv(x, cos, sin)                          # (N, H, hd), (N, kv, hd) ×2
        write_kv(kv_cache, k, v, attn)                           # the cache holds rotated keys
        y = paged_attention(q, kv_cache, attn, scale=self.scale, window=self.window)   # (N, H, hd)
        return self.o_proj(y.reshape(N, -1))


class RotaryDecoderLayer(nn.Module):
    """A pre-norm decoder block: attention then MLP, each around a residual (modules built by the subclass)."""

    input_layernorm: nn.Module
    self_attn: RotaryAttention
    post_attention_layernorm: nn.Module
    mlp: nn.Module

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_paged(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
                      attn: PagedAttention) -> torch.Tensor:
        x = x + self.self_attn.forward_paged(self.input_layernorm(x), cos, sin, kv_cache, attn)
        return x + self.mlp(self.post_attention_layernorm(x))


class RotaryModel(nn.Module):
    """HF's `LlamaModel` / `Starcoder2Model`: embeddings, decoder layers, final norm (built by the subclass)."""

    embed_tokens: nn.Embedding
    layers: nn.ModuleList
    norm: nn.Module

    def __init__(self, config: RotaryConfig, embedding_dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary_emb = RotaryEmbedding(config)
        self.embedding_dropout = embedding_dropout

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] → final hidden states [B, T, C] (positions 0..T-1)."""
        x = self.embed_tokens(input_ids)
        x = F.dropout(x, p=self.embedding_dropout, training=self.training)
        cos, sin = self.rotary_emb(torch.arange(input_ids.shape[1], device=input_ids.device), x.dtype)  # (T, 1, hd)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)

    def forward_paged(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: PagedAttention,
                      kv_caches: list[torch.Tensor]) -> torch.Tensor:
        """The flat step's hidden states [len(attn.logits_indices), C], final norm applied."""
        if len(kv_caches) != len(self.layers):
            raise ValueError(f"{len(kv_caches)} KV caches for {len(self.layers)} layers")
        x = self.embed_tokens(input_ids)                        # (N, C)
        cos, sin = self.rotary_emb(positions, x.dtype)          # (N, 1, hd) each, shared by the layers
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer.forward_paged(x, cos, sin, kv_cache, attn)
        return self.norm(x[attn.logits_indices])               # (L, C): only the rows that need logits


class RotaryForCausalLM(nn.Module):
    """`model` (a `RotaryModel`) and `lm_head`, tied to `model.embed_tokens` when the config says so."""

    config: RotaryConfig
    model: RotaryModel

    def _finish_init(self) -> None:
        """Create `lm_head`, tie it if asked, and initialise every weight as HF's `_init_weights` does."""
        config = self.config
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def tied_weights(self) -> dict[str, str]:
        """State-dict key → the key whose tensor it is (left out of saved checkpoints)."""
        return {"lm_head.weight": "model.embed_tokens.weight"} if self.config.tie_word_embeddings else {}

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())          # parameters() yields a tied weight once
        if exclude_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, V]; with `labels` [B, T] (already shifted, -100 ignored), the mean cross-entropy."""
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {length} tokens is longer than max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        x = self.model(input_ids)                                # (B, T, C)
        if labels is None:
            return self.lm_head(x)                               # (B, T, V)
        return causal_lm_loss(x, self.lm_head.weight, labels)

    def forward_paged(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: PagedAttention,
                      kv_caches: list[torch.Tensor]) -> torch.Tensor:
        """Logits [len(attn.logits_indices), V] for one engine step (see `codefoundry.model.paged`)."""
        return self.lm_head(self.model.forward_paged(input_ids, positions, attn, kv_caches))
