"""The paged KV cache's bookkeeping: which blocks each sequence owns (vLLM's KVCacheManager).

The tensors themselves come from `codefoundry.model.allocate_kv_cache`; this class only hands
out block ids from a fixed pool. A sequence reserves slots for the tokens it is about to
compute, and gets whole blocks on demand:

    block_size 4, sequence "a" has 6 slots reserved, allocate("a", 3):

    slots     0 1 2 3 | 4 5 6 7 | 8 . . .
    blocks    [  7   ] [  2    ] [  5  ]      ← block 5 is new: allocate returns [5]
              computed  ···      new tokens 6, 7, 8

`allocate` is all-or-nothing: it returns None when the free pool cannot hold the new
blocks, and the caller (the `Scheduler`, which sees this class as a `BlockAllocator`)
decides whom to preempt. `free` returns a sequence's blocks tail first, as vLLM does.
Sequence ids are any hashable key (request ids, (adapter, request) pairs); nothing here
assumes one adapter, one model or one process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable


class KVCacheManager:
    """A fixed pool of `num_blocks` blocks of `block_size` token slots each."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks} and {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free: deque[int] = deque(range(num_blocks))
        self._tables: dict[Hashable, list[int]] = {}
        self._num_slots: dict[Hashable, int] = {}

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold `num_tokens` slots."""
        return -(-num_tokens // self.block_size)

    def allocate(self, seq_id: Hashable, num_new_tokens: int) -> list[int] | None:
        """Reserve slots for `num_new_tokens` more tokens of `seq_id`.

        Returns the newly taken block ids (often `[]`: the last block had room), or None, with
        nothing taken, when the pool is too small.
        """
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        table = self._tables.get(seq_id, ())
        need = max(0, self.blocks_needed(self._num_slots.get(seq_id, 0) + num_new_tokens) - len(table))
        if need > len(self._free):
            return None
        new = [self._free.popleft() for _ in range(need)]
        self._tables.setdefault(seq_id, []).extend(new)
        self._num_slots[seq_id] = self._num_slots.get(seq_id, 0) + num_new_tokens
        return new

    def free(self, seq_id: Hashable) -> int:
        """Give back every block of `seq_id` (tail first); returns how many. Unknown ids free nothing."""
        blocks = self._tables.pop(seq_id, [])
        self._num_slots.pop(seq_id, None)
        self._free.extend(reversed(blocks))
        return len(blocks)

    def block_table(self, seq_id: Hashable) -> list[int]:
        """The block ids of `seq_id`, in token order."""
        return list(self._tables.get(seq_id, ()))
