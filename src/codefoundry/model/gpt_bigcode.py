"""GPTBigCode (SantaCoder, StarCoder) as a plain torch module, one class per concept.

Follows HF `transformers/models/gpt_bigcode/modeling_gpt_bigcode.py` (names, weight layouts,
init) and nanoGPT's `model.py` (reading order). The module tree mirrors HF's exactly, so the
state dict and PEFT target names map one to one:

    transformer.wte, transformer.wpe, transformer.h.{i}.{ln_1, attn.c_attn, attn.c_proj,
    ln_2, mlp.c_fc, mlp.c_proj}, transformer.ln_f, lm_head (tied to wte)

GPT-2 pre-LN blocks with learned absolute positions; every projection is an `nn.Linear`
([out, in] weights, with bias except lm_head). The fused `c_attn` output is laid out as HF
does: for multi-query attention `[Q (n_embd) | K (head_dim) | V (head_dim)]`; for multi-head
attention interleaved per head, `[q_0 k_0 v_0 | q_1 k_1 v_1 | …]` ("not the same as GPT2").

Two forward paths share every weight:

- training: `model(input_ids[B, T]) -> logits[B, T, V]` (causal SDPA, positions 0..T-1, no
  cache); `model(input_ids, labels=labels) -> loss`, labels already shifted, -100 ignored,
  through the head fused with the loss (`model/loss.py`: no [B, T, V] logits are made).
- generation: `model.forward_paged(input_ids[N], positions[N], attn, kv_caches)
  -> logits[len(attn.logits_indices), V]` over the paged KV cache. The flat batch,
  `PagedAttention` (block tables, slot mapping) and the cache layout
  `[num_blocks, 2, block_size, kv_heads, head_dim]` are drawn in `codefoundry.model.paged`;
  the RoPE models (`llama.py`, `starcoder2.py`) implement the same signature.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from codefoundry.model.config import GPTBigCodeConfig
from codefoundry.model.loss import causal_lm_loss
from codefoundry.model.paged import PagedAttention, paged_attention, write_kv

ACT_FNS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


class Attention(nn.Module):
    """Causal self-attention with a fused c_attn; kv_heads = 1 (MQA) or n_head (MHA)."""

    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.kv_heads = config.num_kv_heads
        self.multi_query = config.multi_query
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * self.kv_heads * self.head_dim)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.scale = self.head_dim ** -0.5 if config.scale_attn_weights else 1.0

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split c_attn(x) ([..., C]) into q [..., H, hd] and k, v [..., kv_heads, hd] (views, no copies)."""
        if self.c_attn is None:              # tensor-parallel multi-query (train/tensor_parallel.py): local heads
            q, kv = self.q_attn(x), self.kv_attn(x)
            k, v = kv.split(self.head_dim, dim=-1)
            return q.view(*q.shape[:-1], -1, self.head_dim), k.unsqueeze(-2), v.unsqueeze(-2)
        fused = self.c_attn(x)
        lead = fused.shape[:-1]
        if self.multi_query:
            q, k, v = fused.split((self.n_head * self.head_dim, self.head_dim, self.head_dim), dim=-1)
            return q.view(*lead, self.n_head, self.head_dim), k.unsqueeze(-2), v.unsqueeze(-2)
        q, k, v = fused.view(*lead, -1, 3 * self.head_dim).split(self.head_dim, dim=-1)   # -1: local heads
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        q, k, v = self.qkv(x)                                   # (B, T, H, hd), (B, T, kv, hd) ×2
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=self.scale,
            dropout_p=self.attn_pdrop if self.training else 0.0,
            enable_gqa=k.shape[2] != q.shape[2])                # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, -1)                 # -1: H·hd, or the local heads' under --tp
        return self.resid_dropout(self.c_proj(y))

    def forward_paged(self, x: torch.Tensor, kv_cache: torch.Tensor, attn: PagedAttention) -> torch.Tensor:
        N = x.shape[0]
        q, k, v = self.qkv(x)                                   # (N, H, hd), (N, kv, hd) ×2
        write_kv(kv_cache, k, v, attn)
        y = paged_attention(q, kv_cache, attn, scale=self.scale)  # (N, H, hd)
        return self.c_proj(y.reshape(N, -1))                   # -1: H·hd, or the local heads' when sharded


class MLP(nn.Module):
    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.inner_dim)
        self.c_proj = nn.Linear(config.inner_dim, config.n_embd)
        self.act = ACT_FNS[config.activation_function]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_paged(self, x: torch.Tensor, kv_cache: torch.Tensor, attn: PagedAttention) -> torch.Tensor:
        x = x + self.attn.forward_paged(self.ln_1(x), kv_cache, attn)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """HF's `GPTBigCodeModel`: embeddings, blocks, final LayerNorm."""

    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class GPTBigCodeForCausalLM(nn.Module):
    tied_weights: ClassVar[dict[str, str]] = {"lm_head.weight": "transformer.wte.weight"}   # key → key it shares

    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight      # tied, as in every GPTBigCode checkpoint
        self.apply(self._init_weights)
        for name, p in self.named_parameters():                 # GPT-2 scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=config.initializer_range / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        """HF `_init_weights`: N(0, initializer_range) weights, zero biases, unit LayerNorms."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())          # parameters() yields the tied weight once
        if exclude_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, V]; with `labels` [B, T], the mean cross-entropy instead."""
        T = input_ids.shape[1]
        if input_ids.shape[1] > self.config.n_positions:
            raise ValueError(f"sequence of {T} tokens is longer than n_positions={self.config.n_positions}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if labels is None:
            return self.lm_head(x)                               # (B, T, V)
        # same math as F.cross_entropy(lm_head(x), labels), without the logits (model/loss.py)
        return causal_lm_loss(x, self.lm_head.weight, labels)

    def forward_paged(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: PagedAttention,
                      kv_caches: list[torch.Tensor]) -> torch.Tensor:
        """Logits [len(attn.logits_indices), V] for one engine step over the paged KV cache.

        `input_ids` and `positions` are [N]: the new tokens of all sequences, flattened in
        sequence order; `kv_caches` holds one `[num_blocks, 2, block_size, kv_heads, head_dim]`
        tensor per layer, updated in place (see `codefoundry.model.paged`).
        """
        if len(kv_caches) != len(self.transformer.h):
            raise ValueError(f"{len(kv_caches)} KV caches for {len(self.transformer.h)} layers")
        x = self.transformer.wte(input_ids) + self.transformer.wpe(positions)   # (N, C)
        for block, kv_cache in zip(self.transformer.h, kv_caches, strict=True):
            x = block.forward_paged(x, kv_cache, attn)
        x = x[attn.logits_indices]                               # (L, C): only the rows that need logits
        return self.lm_head(self.transformer.ln_f(x))            # (L, V)
