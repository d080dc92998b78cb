"""KVCacheManager: blocks on demand, all-or-nothing, None when full, tail-first free, slot mapping."""

from __future__ import annotations

import pytest

from codefoundry.generate import KVCacheManager


def test_allocate_on_demand_and_slot_mapping() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=4)
    assert kv.allocate("a", 6) == [0, 1]
    assert kv.allocate("a", 1) == []                       # slot 6 fits in block 1
    assert kv.allocate("a", 2) == [2]                      # slots 7, 8: block 2 opens
    assert kv.block_table("a") == [0, 1, 2] and kv.num_slots("a") == 9
    assert kv.slot_mapping("a", 3, 3) == [3, 4, 5]
    assert kv.slot_mapping("a", 8, 1) == [8]
    with pytest.raises(ValueError, match="9 slots reserved"):
        kv.slot_mapping("a", 8, 2)
    assert kv.num_free_blocks == 1 and kv.num_used_blocks == 3


def test_none_when_full_takes_nothing() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=2)
    assert kv.allocate("a", 4) == [0, 1]
    assert not kv.can_allocate("b", 3)
    assert kv.allocate("b", 3) is None                     # would need 2 blocks, 1 free
    assert kv.num_free_blocks == 1 and "b" not in kv and kv.num_slots("b") == 0
    assert kv.allocate("b", 2) == [2]
    assert kv.allocate("a", 1) is None and kv.num_slots("a") == 4


def test_free_returns_blocks_tail_first_and_they_are_reused() -> None:
    kv = KVCacheManager(num_blocks=6, block_size=2)
    kv.allocate("a", 2)
    kv.allocate("b", 6)                                    # blocks 1, 2, 3
    assert kv.free("b") == 3 and kv.free("b") == 0 and kv.free("never") == 0
    assert kv.num_free_blocks == 5
    assert kv.allocate("c", 10) == [4, 5, 3, 2, 1]         # untouched blocks first, then b's tail first
    assert kv.allocate(("adapter-x", 7), 1) is None         # any hashable id; pool empty now
    kv.free("a")
    assert kv.allocate(("adapter-x", 7), 1) == [0]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        KVCacheManager(0, 16)
    with pytest.raises(ValueError):
        KVCacheManager(4, 16).allocate("a", -1)
