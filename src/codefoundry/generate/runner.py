"""The model runner: scheduled sequences in, logits out (vLLM's GPUModelRunner, minus the GPU tricks).

The scheduler says, per sequence, how many of its tokens to compute this step; the runner
flattens them into the model's paged signature (`codefoundry.model.paged`) and calls
`model.forward_paged`. A sequence whose prompt is longer than the step's token budget is
simply scheduled in several chunks (chunked prefill): its `num_computed` grows until it
reaches `len(token_ids)`, and only then are its logits used.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from codefoundry.generate.adapters import AdapterRegistry
from codefoundry.model import PagedAttention, allocate_kv_cache


@dataclass
class ScheduledSequence:
    """One sequence's share of a step."""

    token_ids: Sequence[int]    # every known token (prompt + generated)
    num_computed: int           # tokens whose K/V are already in the cache
    num_new: int                # tokens to compute now: token_ids[num_computed : num_computed + num_new]
    block_table: list[int]      # its cache blocks, holding at least num_computed + num_new slots
    all_logits: bool = False    # logits for every new token (prompt logprobs), not only the last
    adapter_id: Hashable | None = None   # the LoRA adapter its tokens run through (None: the base model)
    draft_token_ids: Sequence[int] = ()  # draft tokens after token_ids (speculative decoding), counted in num_new


@dataclass
class StepLogits:
    last: torch.Tensor                                   # [S, V] logits after each sequence's last new token
    all: list[torch.Tensor | None] = field(default_factory=list)   # [S] [num_new, V] where all_logits, else None


class ModelRunner:
    """Owns the KV cache tensors of one model; `execute(seqs)` runs one step."""

    def __init__(self, model: torch.nn.Module, num_blocks: int, block_size: int,
                 kv_dtype: torch.dtype | None = None, adapters: AdapterRegistry | None = None) -> None:
        self.model = model
        self.adapters = adapters          # LoRA adapters a sequence may name (its adapter_id is a registry key)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.block_size, self.num_blocks = block_size, num_blocks
        self.kv_caches = allocate_kv_cache(model.config, num_blocks, block_size,
                                           dtype=kv_dtype or self.dtype, device=self.device)

    def prepare(self, seqs: Sequence[ScheduledSequence]) -> tuple[torch.Tensor, torch.Tensor, PagedAttention]:
        """The flat `input_ids[N]`, `positions[N]` and `PagedAttention` for `seqs`."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logits_indices: list[int] = []
        for s in seqs:
            start, end = s.num_computed, s.num_computed + s.num_new
            known = len(s.token_ids)
            if s.num_new < 1 or end > known + len(s.draft_token_ids):
                raise ValueError(f"cannot compute tokens {start}..{end - 1} of a "
                                 f"{known + len(s.draft_token_ids)}-token sequence")
            if len(s.block_table) * bs < end:
                raise ValueError(f"{len(s.block_table)} blocks of {bs} cannot hold {end} tokens")
            first = len(ids)
            ids.extend(s.token_ids[start:end])
            if end > known:
                ids.extend(s.draft_token_ids[max(start - known, 0):end - known])
            positions.extend(range(start, end))
            if s.num_new == 1:
                slots.append(s.block_table[start // bs] * bs + start % bs)
            else:
                slots.extend(s.block_table[p // bs] * bs + p % bs for p in range(start, end))
            logits_indices.extend(range(first, first + s.num_new) if s.all_logits else (first + s.num_new - 1,))
        width = max(len(s.block_table) for s in seqs)
        tables = torch.tensor([list(s.block_table) + [0] * (width - len(s.block_table)) for s in seqs],
                              dtype=torch.long)                                   # (S, width), unused entries 0
        dev = self.device
        attn = PagedAttention(
            query_lens=[s.num_new for s in seqs],
            context_lens=[s.num_computed + s.num_new for s in seqs],
            block_tables=tables.to(dev),
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            logits_indices=torch.tensor(logits_indices, dtype=torch.long, device=dev),
            block_size=bs,
        )
        return (torch.tensor(ids, dtype=torch.long, device=dev),
                torch.tensor(positions, dtype=torch.long, device=dev), attn)

    @torch.inference_mode()
    def execute(self, seqs: Sequence[ScheduledSequence]) -> StepLogits:
        """Run one step over `seqs` (in this order); the cache is updated in place."""
        if not seqs:
            raise ValueError("execute() needs at least one scheduled sequence")
        input_ids, positions, attn = self.prepare(seqs)
        with self._lora(seqs):
            logits = self.model.forward_paged(input_ids, positions, attn, self.kv_caches)   # (L, V)
        last_rows, all_logits, row = [], [], 0
        for s in seqs:
            n = s.num_new if s.all_logits else 1
            all_logits.append(logits[row:row + n] if s.all_logits else None)
            row += n
            last_rows.append(row - 1)
        last = logits if row == len(seqs) else logits[last_rows]   # one row per sequence: already the last
        return StepLogits(last=last, all=all_logits)

    def _lora(self, seqs: Sequence[ScheduledSequence]) -> AbstractContextManager[None]:
        """Each sequence's rows through its adapter, all in this one forward (nothing when none names one)."""
        if self.adapters is None or all(s.adapter_id is None for s in seqs):
            return nullcontext()
        logits_rows, first = [], 0
        for s in seqs:
            logits_rows.extend(range(first, first + s.num_new) if s.all_logits else (first + s.num_new - 1,))
            first += s.num_new
        return self.adapters.step([s.adapter_id for s in seqs], [s.num_new for s in seqs], logits_rows)
