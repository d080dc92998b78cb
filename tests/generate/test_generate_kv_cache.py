"""KVCacheManager: blocks on demand, all-or-nothing, None when full, tail-first free."""

from __future__ import annotations

import pytest

from codefoundry.generate import KVCacheManager


def test_allocate_takes_blocks_on_demand() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=4)
    assert kv.allocate("a", 6) == [0, 1]
    assert kv.allocate("a", 1) == []                       # slot 6 fits in block 1
    assert kv.allocate("a", 2) == [2]                      # slots 7, 8: block 2 opens
    assert kv.block_table("a") == [0, 1, 2] and kv.num_used_blocks == 3
    assert kv.allocate("a", 0) == [] and kv.blocks_needed(9) == 3


def test_none_when_full_takes_nothing() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=2)
    assert kv.allocate("a", 4) == [0, 1]
    assert kv.allocate("b", 3) is None                     # would need 2 blocks, 1 free
    assert kv.num_used_blocks == 2 and kv.block_table("b") == []
    assert kv.allocate("b", 2) == [2]
    assert kv.allocate("a", 1) is None and kv.block_table("a") == [0, 1]
    kv.free("b")
    assert kv.allocate("a", 1) == [2]                      # a's 4 slots were kept: the 5th opens a block


def test_free_returns_blocks_tail_first_and_they_are_reused() -> None:
    kv = KVCacheManager(num_blocks=6, block_size=2)
    kv.allocate("a", 2)
    kv.allocate("b", 6)                                    # blocks 1, 2, 3
    assert kv.free("b") == 3 and kv.free("b") == 0 and kv.free("never") == 0
    assert kv.num_used_blocks == 1
    assert kv.allocate("c", 10) == [4, 5, 3, 2, 1]         # untouched blocks first, then b's tail first
    assert kv.allocate(("adapter-x", 7), 1) is None         # any hashable id; pool empty now
    kv.free("a")
    assert kv.allocate(("adapter-x", 7), 1) == [0]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        KVCacheManager(0, 16)
    with pytest.raises(ValueError):
        KVCacheManager(4, 16).allocate("a", -1)
