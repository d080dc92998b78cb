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
and positions are passed in, so the RoPE models (Llama, StarCoder2) use the same `PagedAttention`.
A sliding window (StarCoder2's `sliding_window`) narrows "sees indices ≤ that" to the last
`window` of them; the cache still keeps every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


class CacheShape(Protocol):
    """What the KV cache needs to know of a model config (every architecture's config has it)."""

    n_layer: int
    num_kv_heads: int
    head_dim: int


@dataclass
class PagedAttention:
    """Where one step's tokens come from and go to in the paged cache (see the module docstring).

    Build one per step and do not change it afterwards: the first layer derives its plan from
    it and every later layer reuses that.
    """

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

    @property
    def plan(self) -> StepPlan:
        """The step's cache indices and masks (full causal attention), built once and reused by every layer."""
        return self.plan_for(None)

    def plan_for(self, window: int | None) -> StepPlan:
        """As `plan`, for attention limited to the last `window` positions (None: unlimited)."""
        plans = self.__dict__.setdefault("_plans", {})
        if window is not None and window >= max(self.context_lens, default=0):
            window = None                     # the window covers every context: plain causal attention
        if window not in plans:
            plans[window] = plan_step(self, window)
        return plans[window]


def allocate_kv_cache(config: CacheShape, num_blocks: int, block_size: int,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """One zeroed tensor per layer, `[num_blocks, 2, block_size, num_kv_heads, head_dim]` (0 = K, 1 = V)."""
    shape = (num_blocks, 2, block_size, config.num_kv_heads, config.head_dim)
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]


def kv_cache_bytes_per_block(config: CacheShape, block_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes one block takes across all layers (K and V)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return config.n_layer * 2 * block_size * config.num_kv_heads * config.head_dim * itemsize


# How attention runs over the cache. The cache of one layer is read as a flat table of rows,
# `kv_cache.view(num_blocks * 2 * block_size, kv_heads, head_dim)`: the K of slot
# `b * block_size + o` is row `b * 2 * block_size + o` and its V is `block_size` rows further.
# Every index a step needs is computed once, in `StepPlan` (the first layer builds it, the
# others reuse it), so a layer costs one `index_copy_` per K and V, one `index_select` of the
# context rows, and one SDPA call per group:
#   - decoding sequences (query_len 1) attend to their whole context: no causal mask, only a
#     key-padding bias when their contexts differ in length. The H query heads are folded
#     into the query-length dimension (`[S, kv_heads, H / kv_heads, hd]` against
#     `[S, kv_heads, ctx, hd]`), so MQA is one matmul over the shared K/V per sequence.
#   - every other sequence (a prefill chunk) runs alone: `is_causal=True` when it has no past
#     (its new tokens are its whole context), otherwise a bottom-right causal mask.
#   - a sliding window that is shorter than some context turns into explicit masks: the
#     key-padding mask of a decoding sequence also hides keys older than the window, and a
#     prefill chunk's causal mask gets a lower edge.


@dataclass
class DecodeGroup:
    """The sequences of a step that decode one token each."""

    tokens: torch.Tensor | None    # [D] their tokens among the N (None: all N tokens, in order)
    rows: torch.Tensor             # [2, D * max_ctx] cache rows of their contexts' K (0) and V (1), padded
    max_ctx: int
    key_padding: torch.Tensor | None   # [D, 1, 1, max_ctx] bool, True = a key it sees (None: all of them)
    _biases: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    def key_bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """`key_padding` as an additive 0 / -inf mask of `dtype` (SDPA's CPU kernel is faster with one)."""
        if self.key_padding is None:
            return None
        if dtype not in self._biases:
            bias = torch.zeros(self.key_padding.shape, dtype=dtype, device=self.key_padding.device)
            self._biases[dtype] = bias.masked_fill_(~self.key_padding, float("-inf"))
        return self._biases[dtype]


@dataclass
class PrefillSequence:
    """A sequence of a step with more than one new token (a prefill chunk)."""

    start: int                     # its new tokens are start:end of the N
    end: int
    rows: torch.Tensor             # [2, ctx] cache rows of its context's K (0) and V (1)
    causal_mask: torch.Tensor | None   # [q, ctx] bool when it has a past, else None (is_causal)


@dataclass
class StepPlan:
    """Every cache index one step needs, shared by all layers."""

    write_rows: torch.Tensor       # [2, N] cache rows where the new tokens' K (0) and V (1) go
    decode: DecodeGroup | None
    prefills: list[PrefillSequence]


def plan_step(attn: PagedAttention, window: int | None = None) -> StepPlan:
    """The indices and masks of `attn`'s step, each query seeing at most `window` keys (see `DecodeGroup`)."""
    bs, device = attn.block_size, attn.block_tables.device
    slots = attn.slot_mapping
    k_rows = slots // bs * (2 * bs) + slots % bs
    write_rows = torch.stack((k_rows, k_rows + bs))

    def context_rows(tables: torch.Tensor, width: int) -> torch.Tensor:   # [S', width] K rows
        cols = torch.arange(width, device=device)
        return tables[:, cols // bs] * (2 * bs) + cols % bs

    decoding = [s for s, q in enumerate(attn.query_lens) if q == 1]
    starts = [0]
    for q in attn.query_lens:
        starts.append(starts[-1] + q)
    decode = None
    if decoding:
        ctx_lens = [attn.context_lens[s] for s in decoding]
        max_ctx = max(ctx_lens)
        every = len(decoding) == len(attn.query_lens)
        tables = attn.block_tables if every else attn.block_tables[torch.tensor(decoding, device=device)]
        rows = context_rows(tables, max_ctx).reshape(-1)
        padding = None
        if min(ctx_lens) != max_ctx or window is not None:
            lens, keys = torch.tensor(ctx_lens, device=device)[:, None], torch.arange(max_ctx, device=device)
            seen = keys < lens if window is None else (keys < lens) & (keys >= lens - window)
            padding = seen.view(len(decoding), 1, 1, max_ctx)
        decode = DecodeGroup(
            tokens=None if every else torch.tensor([starts[s] for s in decoding], device=device),
            rows=torch.stack((rows, rows + bs)), max_ctx=max_ctx, key_padding=padding)
    prefills = []
    in_decode = set(decoding)
    for s, (q, ctx) in enumerate(zip(attn.query_lens, attn.context_lens, strict=True)):
        if s in in_decode:
            continue
        rows = k_rows[starts[s]:starts[s + 1]] if q == ctx else context_rows(attn.block_tables[s:s + 1], ctx)[0]
        mask = None                                   # no past (its rows are the ones it just wrote), no window
        if q != ctx or (window is not None and window < ctx):
            # new token i sits at cache index ctx - q + i and sees indices <= that (and > that - window)
            keys = torch.arange(ctx, device=device)[None, :]
            queries = torch.arange(ctx - q, ctx, device=device)[:, None]
            mask = keys <= queries if window is None else (keys <= queries) & (keys > queries - window)
        prefills.append(PrefillSequence(starts[s], starts[s + 1], torch.stack((rows, rows + bs)), mask))
    return StepPlan(write_rows, decode, prefills)


def write_kv(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn: PagedAttention) -> None:
    """Store the new tokens' `key`/`value` ([N, kv_heads, head_dim]) at their slots."""
    flat = kv_cache.view(-1, *kv_cache.shape[-2:])
    kv = torch.cat((key, value))                  # [2N, kv_heads, hd] in write_rows' order (K rows, then V rows)
    flat.index_copy_(0, attn.plan.write_rows.view(-1), kv if kv.dtype == flat.dtype else kv.to(flat.dtype))


def _gather(kv_cache: torch.Tensor, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cache rows `rows` ([2, R]) as [2, R, kv_heads, hd] of `dtype`."""
    flat = kv_cache.view(-1, *kv_cache.shape[-2:])
    kv = flat.index_select(0, rows.view(-1)).view(2, rows.shape[1], *kv_cache.shape[-2:])
    return kv if kv.dtype == dtype else kv.to(dtype)


def paged_attention(query: torch.Tensor, kv_cache: torch.Tensor, attn: PagedAttention,
                    scale: float | None = None, window: int | None = None) -> torch.Tensor:
    """Causal attention of the N new `query` tokens ([N, H, hd]) over their sequences' cached K/V.

    The new tokens' K/V must already be in the cache (`write_kv`); with `window`, each token
    sees only the last `window` positions up to its own. Returns [N, H, hd].
    """
    plan = attn.plan_for(window)
    H = query.shape[1]
    decode = plan.decode
    if decode is not None and decode.tokens is None:        # a pure decode step: one call, no scatter
        return _decode_attention(query, kv_cache, decode, scale)
    out = torch.empty_like(query)
    if decode is not None:
        out.index_copy_(0, decode.tokens, _decode_attention(query.index_select(0, decode.tokens), kv_cache,
                                                            decode, scale))
    for p in plan.prefills:
        k, v = _gather(kv_cache, p.rows, query.dtype)                             # (ctx, kv, hd) each
        # 4-D (1, H, q, hd): with 3-D inputs torch takes its slow math fallback, not the fused CPU kernel
        y = sdpa(
            query[p.start:p.end].transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
            attn_mask=p.causal_mask, is_causal=p.causal_mask is None, scale=scale,
            enable_gqa=k.shape[1] != H)[0]                                          # (H, q, hd)
        out[p.start:p.end] = y.transpose(0, 1)
    return out


# cuDNN's attention builds (and caches) a plan for every new shape, and a paged decode's context
# grows by one each step: on a GPU it spent more time planning than attending (bf16, H200).
_CUDA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, kept off the cuDNN backend on CUDA."""
    if not query.is_cuda:
        return F.scaled_dot_product_attention(query, key, value, **kwargs)
    with sdpa_kernel(_CUDA_BACKENDS):
        return F.scaled_dot_product_attention(query, key, value, **kwargs)


def _decode_attention(query: torch.Tensor, kv_cache: torch.Tensor, group: DecodeGroup,
                      scale: float | None) -> torch.Tensor:
    """One query token per sequence ([D, H, hd]) over its context: heads folded into the query length."""
    D, H, hd = query.shape
    kv = _gather(kv_cache, group.rows, query.dtype).view(2, D, group.max_ctx, -1, hd)
    kv_heads = kv.shape[3]
    q = query.view(D, kv_heads, H // kv_heads, hd)                               # (D, kv, g, hd)
    y = sdpa(q, kv[0].transpose(1, 2), kv[1].transpose(1, 2),
             attn_mask=group.key_bias(q.dtype), scale=scale)                    # (D, kv, g, hd)
    return y.reshape(D, H, hd)
