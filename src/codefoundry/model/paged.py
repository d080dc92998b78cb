"""The paged KV cache and attention over it: the one signature every decoder here plugs into.

A step of the generation engine runs S sequences at once. Each brings `query_lens[s]` new
tokens (a prefill chunk, or 1 when decoding); their ids are flattened in sequence order into
one `input_ids[N]` with explicit `positions[N]`. Keys and values live in fixed-size blocks;
each sequence owns a list of block ids (its row of `block_tables`), and each new token is
written to one slot, `block_id * block_size + offset`:

    sequence 0: 5 tokens cached (block_size 4), 2 new         kv_cache[layer]:
      context_lens[0] = 7, query_lens[0] = 2                   [num_blocks, 2, block_size, kv_heads, head_dim]
      block_tables[0] = [3, 1, 0, …]                                     0 = K, 1 = V
                                                                block 0: . . . .
      positions   0 1 2 3 | 4 5 6                               block 1: s0 s0 s0 ·   ← slots 4, 5, 6, 7
      block        3      |  1                                  block 2: s1 · · ·
      new tokens          |    5 6  → slot_mapping = [5, 6]     block 3: s0 s0 s0 s0  ← slots 12..15

    sequence 1: decoding its 1st token after a 0-token past: context_lens[1] = 1,
      block_tables[1] = [2, 0, …], slot_mapping = [8]

    input_ids = [t0_5, t0_6, t1_0]   positions = [5, 6, 0]   logits_indices = [1, 2]

Each layer first writes the new K/V into their slots, then every query token attends to
the first `context_lens[s]` cached tokens of its sequence, causally: the i-th new token of
sequence s sits at cache index `context_lens[s] - query_lens[s] + i` and sees indices ≤ that.
Nothing here assumes one KV head or learned positions: kv_heads ∈ {1 (MQA), g (GQA), H (MHA)},
and positions are passed in, so a RoPE model (Llama) uses the same `PagedAttention`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from codefoundry.model.config import GPTBigCodeConfig


@dataclass
class PagedAttention:
    """Where one step's tokens come from and go to in the paged cache (see the module docstring)."""

    query_lens: list[int]          # [S] new tokens per sequence this step (sum = N)
    context_lens: list[int]        # [S] tokens in the cache per sequence AFTER this step (past + new)
    block_tables: torch.Tensor     # [S, max_blocks] int64 cache block ids per sequence (unused entries 0)
    slot_mapping: torch.Tensor     # [N] int64 flat slot (block_id * block_size + offset) of each new token
    logits_indices: torch.Tensor   # [L] int64 which of the N tokens get logits (usually each sequence's last)
    block_size: int

    def __post_init__(self) -> None:
        if len(self.query_lens) != len(self.context_lens):
            raise ValueError(f"query_lens has {len(self.query_lens)} sequences, context_lens "
                             f"{len(self.context_lens)}")
        for s, (q, c) in enumerate(zip(self.query_lens, self.context_lens, strict=True)):
            if not 0 < q <= c:
                raise ValueError(f"sequence {s}: need 0 < query_len ({q}) <= context_len ({c})")
        if self.block_tables.dim() != 2 or self.block_tables.shape[0] != len(self.query_lens):
            raise ValueError(f"block_tables must be [S={len(self.query_lens)}, max_blocks], "
                             f"got {list(self.block_tables.shape)}")
        if self.slot_mapping.shape != (sum(self.query_lens),):
            raise ValueError(f"slot_mapping must be [N={sum(self.query_lens)}], got {list(self.slot_mapping.shape)}")
        need = -(-max(self.context_lens, default=0) // self.block_size)
        if need > self.block_tables.shape[1]:
            raise ValueError(f"block_tables has {self.block_tables.shape[1]} columns but a context of "
                             f"{max(self.context_lens)} tokens needs {need} blocks of {self.block_size}")

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)


def allocate_kv_cache(config: GPTBigCodeConfig, num_blocks: int, block_size: int,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """One zeroed tensor per layer, `[num_blocks, 2, block_size, num_kv_heads, head_dim]` (0 = K, 1 = V)."""
    shape = (num_blocks, 2, block_size, config.num_kv_heads, config.head_dim)
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]


def kv_cache_bytes_per_block(config: GPTBigCodeConfig, block_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes one block takes across all layers (K and V)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return config.n_layer * 2 * block_size * config.num_kv_heads * config.head_dim * itemsize


def write_kv(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn: PagedAttention) -> None:
    """Store the new tokens' `key`/`value` ([N, kv_heads, head_dim]) at their slots."""
    blocks = attn.slot_mapping // attn.block_size
    offsets = attn.slot_mapping % attn.block_size
    kv_cache[blocks, 0, offsets] = key.to(kv_cache.dtype)
    kv_cache[blocks, 1, offsets] = value.to(kv_cache.dtype)


def paged_attention(query: torch.Tensor, kv_cache: torch.Tensor, attn: PagedAttention,
                    scale: float | None = None) -> torch.Tensor:
    """Causal attention of the N new `query` tokens ([N, H, hd]) over their sequences' cached K/V.

    All sequences go through one SDPA call: queries are padded to the longest `query_len`,
    keys to the longest context, and a boolean mask keeps each query to its own sequence's
    causal past. Returns [N, H, hd].
    """
    S, H, hd = len(attn.query_lens), query.shape[1], query.shape[2]
    device = query.device
    q_lens = torch.tensor(attn.query_lens, device=device)
    ctx_lens = torch.tensor(attn.context_lens, device=device)
    max_q, max_ctx = max(attn.query_lens), max(attn.context_lens)

    # token n belongs to sequence seq[n] at index pos[n] among that sequence's new tokens
    seq = torch.repeat_interleave(torch.arange(S, device=device), q_lens)
    starts = torch.cumsum(q_lens, 0) - q_lens
    pos = torch.arange(query.shape[0], device=device) - starts[seq]

    q = query.new_zeros(S, max_q, H, hd)
    q[seq, pos] = query                                                  # (S, max_q, H, hd)

    n_blocks = -(-max_ctx // attn.block_size)
    tables = attn.block_tables[:, :n_blocks]
    kv = kv_cache[tables]                                    # (S, n_blocks, 2, block_size, kv_heads, hd)
    kv = kv.transpose(1, 2).reshape(S, 2, n_blocks * attn.block_size, -1, hd)[:, :, :max_ctx]
    k, v = kv[:, 0].to(query.dtype), kv[:, 1].to(query.dtype)           # (S, max_ctx, kv_heads, hd)

    # query i of sequence s is at cache index ctx - q_len + i and sees keys 0..that index
    q_index = (ctx_lens - q_lens)[:, None] + torch.arange(max_q, device=device)[None, :]  # (S, max_q)
    mask = torch.arange(max_ctx, device=device)[None, None, :] <= q_index[:, :, None]     # (S, max_q, max_ctx)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask[:, None],
        scale=scale, enable_gqa=k.shape[2] != H)                         # (S, H, max_q, hd)
    return out.transpose(1, 2)[seq, pos]                                 # (N, H, hd)
