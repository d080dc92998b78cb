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

With prefix caching (`codefoundry.generate.prefix_cache`), blocks are shared: `lookup` finds
the cached full blocks a new sequence starts with, `allocate(..., prefix)` makes them the
head of its table, `cache_blocks` registers the blocks a step filled, and a freed block
keeps its K/V (and stays findable) until a later allocation needs its memory.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from codefoundry.generate.prefix_cache import BlockHash, BlockPool, CachedPrefix, PrefixCacheStats, hash_block

NO_PREFIX = CachedPrefix()


class KVCacheManager:
    """A fixed pool of `num_blocks` blocks of `block_size` token slots each."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks} and {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.stats = PrefixCacheStats()
        self._tables: dict[Hashable, list[int]] = {}
        self._num_slots: dict[Hashable, int] = {}
        self._hashes: dict[Hashable, list[BlockHash]] = {}    # of the sequence's leading full, computed blocks

    @property
    def num_used_blocks(self) -> int:
        """Blocks held by at least one sequence (free cached blocks are not used: they can be evicted)."""
        return self.num_blocks - self.pool.num_free

    @property
    def num_cached_blocks(self) -> int:
        return self.pool.num_cached

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold `num_tokens` slots."""
        return -(-num_tokens // self.block_size)

    def lookup(self, token_ids: Sequence[int], adapter_id: Hashable | None = None) -> CachedPrefix:
        """The longest run of cached full blocks that `token_ids` starts with, leaving at least its last token.

        The last token is always left to compute: its logits pick the next token.
        """
        if not self.enable_prefix_caching:
            return CachedPrefix(num_queried=len(token_ids))
        bs = self.block_size
        blocks: list[int] = []
        hashes: list[BlockHash] = []
        for i in range((len(token_ids) - 1) // bs):
            h = hash_block(hashes[-1] if hashes else None, token_ids[i * bs:(i + 1) * bs], adapter_id)
            block = self.pool.cached_block(h)
            if block is None:
                break
            blocks.append(block)
            hashes.append(h)
        return CachedPrefix(blocks, hashes, len(blocks) * bs, len(token_ids))

    def allocate(self, seq_id: Hashable, num_new_tokens: int, prefix: CachedPrefix = NO_PREFIX) -> list[int] | None:
        """Reserve slots for `num_new_tokens` more tokens of `seq_id`.

        A new sequence may start from a `prefix` found by `lookup` (its slots are then
        `prefix.num_tokens + num_new_tokens`). Returns the newly taken block ids (often `[]`:
        the last block had room), or None, with nothing taken, when the pool is too small.
        """
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        if prefix.block_ids and seq_id in self._tables:
            raise ValueError(f"sequence {seq_id!r} already has blocks: a cached prefix only starts a sequence")
        table = self._tables.get(seq_id, prefix.block_ids)
        slots = self._num_slots.get(seq_id, prefix.num_tokens) + num_new_tokens
        need = max(0, self.blocks_needed(slots) - len(table))
        revived = sum(1 for b in prefix.block_ids if self.pool.ref_count[b] == 0)   # free now, held after
        if need + revived > self.pool.num_free:
            return None
        if seq_id not in self._tables:
            self.pool.touch(prefix.block_ids)
            self._tables[seq_id] = list(prefix.block_ids)
            self._hashes[seq_id] = list(prefix.hashes)
            self.stats.queries += prefix.num_queried
            self.stats.hits += prefix.num_tokens
        new = self.pool.take(need)
        self._tables[seq_id].extend(new)
        self._num_slots[seq_id] = slots
        return new

    def cache_blocks(self, seq_id: Hashable, token_ids: Sequence[int], num_computed_tokens: int,
                     adapter_id: Hashable | None = None) -> None:
        """Register the blocks of `seq_id` that are full of computed tokens (`token_ids[:num_computed_tokens]`)."""
        hashes = self._hashes.get(seq_id)
        if not self.enable_prefix_caching or hashes is None:
            return
        bs, table = self.block_size, self._tables[seq_id]
        for i in range(len(hashes), num_computed_tokens // bs):
            h = hash_block(hashes[-1] if hashes else None, token_ids[i * bs:(i + 1) * bs], adapter_id)
            hashes.append(h)
            self.pool.register(table[i], h)   # False: an identical block computed alongside; this one stays private

    def free(self, seq_id: Hashable) -> int:
        """Give back every block of `seq_id` (tail first); returns how many. Unknown ids free nothing.

        A cached block keeps its contents and hash after this: a later `lookup` can still find it.
        """
        blocks = self._tables.pop(seq_id, [])
        self._num_slots.pop(seq_id, None)
        self._hashes.pop(seq_id, None)
        self.pool.release(reversed(blocks))
        return len(blocks)

    def trim(self, seq_id: Hashable, num_tokens: int) -> int:
        """Shrink the slots of `seq_id` to its first `num_tokens` (rejected draft tokens' slots), giving back the
        blocks past them; returns how many. Those blocks were never registered: their slots were not computed."""
        slots = self._num_slots.get(seq_id)
        if slots is None or num_tokens >= slots:
            return 0
        table = self._tables[seq_id]
        keep = self.blocks_needed(num_tokens)
        spare = table[keep:]
        del table[keep:]
        self._num_slots[seq_id] = num_tokens
        self.pool.release(reversed(spare), reuse_first=True)
        return len(spare)

    def block_table(self, seq_id: Hashable) -> list[int]:
        """The block ids of `seq_id`, in token order."""
        return list(self._tables.get(seq_id, ()))
