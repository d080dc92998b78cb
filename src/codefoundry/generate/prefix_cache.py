"""Prefix caching: the block pool under `KVCacheManager` (vLLM v1's BlockPool and block hashes).

A full block of K/V depends only on its tokens, every token before it, and the weights that
computed it (the base model plus, later, a LoRA adapter). So each full block gets a hash of
(its parent block's hash, its token ids, the adapter id), a chain that names the whole
prefix; a new request whose leading full blocks hash the same reuses those blocks instead
of computing them (an IDE re-sends nearly the same file on every keystroke).

    tokens   [a b c d][e f g h][i j]          block_size 4
    hashes   h1=H(-,abcd,None)  h2=H(h1,efgh,None)   (the partial block is never cached)

Blocks are reference-counted: a block held by no request is "free" but keeps its K/V and its
hash, so a later request can still hit it, until its memory is needed. Free blocks are
handed out least recently freed first (an LRU queue); a request frees its blocks tail
first, so the end of a prompt (least likely to be shared) is evicted before its beginning.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

BlockHash = bytes


def hash_block(parent: BlockHash | None, token_ids: Sequence[int], adapter_id: Hashable | None = None) -> BlockHash:
    """The hash of one full block: sha256 (a collision would silently give wrong outputs) over the chain."""
    h = hashlib.sha256(parent or b"\0" * 32)
    h.update(array("q", token_ids).tobytes())
    h.update(b"\xff" + repr(adapter_id).encode())     # block sizes are fixed: the token bytes cannot run into it
    return h.digest()


@dataclass(frozen=True)
class CachedPrefix:
    """A lookup's result: the cached blocks a request can start from."""

    block_ids: list[int] = field(default_factory=list)
    hashes: list[BlockHash] = field(default_factory=list)   # of block_ids, in order
    num_tokens: int = 0                                     # tokens they hold (whole blocks)
    num_queried: int = 0                                    # tokens of the request that looked them up


@dataclass
class PrefixCacheStats:
    """Token counts since start: looked up at admission, and found cached (vLLM's queries and hits)."""

    queries: int = 0
    hits: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


class BlockPool:
    """`num_blocks` block ids with reference counts, a hash → block map, and an LRU queue of free blocks."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.ref_count = [0] * num_blocks
        self.block_hash: list[BlockHash | None] = [None] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))   # front: evicted first
        self._cached: dict[BlockHash, int] = {}

    @property
    def num_free(self) -> int:
        """Blocks no request holds (cached or not): what new allocations can take."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Blocks with a registered hash (held or free)."""
        return len(self._cached)

    def cached_block(self, block_hash: BlockHash) -> int | None:
        return self._cached.get(block_hash)

    def take(self, n: int) -> list[int]:
        """`n` free blocks, least recently freed first, each now held once; a cached one loses its hash."""
        if n > len(self._free):
            raise ValueError(f"asked for {n} blocks, {len(self._free)} free")
        taken = []
        for _ in range(n):
            block, _ = self._free.popitem(last=False)
            self._evict(block)
            self.ref_count[block] = 1
            taken.append(block)
        return taken

    def touch(self, blocks: Iterable[int]) -> None:
        """Hold cached blocks once more (a request reusing them); a free one leaves the free queue."""
        for block in blocks:
            if self.ref_count[block] == 0:
                del self._free[block]
            self.ref_count[block] += 1

    def release(self, blocks: Iterable[int], reuse_first: bool = False) -> None:
        """Drop one hold on each block, in this order; a block no one holds joins the back of the free queue
        (`reuse_first`: the front, for blocks holding nothing worth keeping, so cached blocks are evicted later)."""
        for block in blocks:
            if self.ref_count[block] < 1:
                raise ValueError(f"block {block} is not held")
            self.ref_count[block] -= 1
            if self.ref_count[block] == 0:
                self._free[block] = None
                if reuse_first:
                    self._free.move_to_end(block, last=False)

    def register(self, block: int, block_hash: BlockHash) -> bool:
        """Make a full, computed block findable by its hash; False when another block already has that hash."""
        if block_hash in self._cached or self.block_hash[block] is not None:
            return False
        self._cached[block_hash] = block
        self.block_hash[block] = block_hash
        return True

    def _evict(self, block: int) -> None:
        block_hash = self.block_hash[block]
        if block_hash is not None:
            del self._cached[block_hash]
            self.block_hash[block] = None
