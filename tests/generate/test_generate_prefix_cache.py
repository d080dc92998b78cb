"""Prefix caching: block hashes, sharing, refcounts and LRU eviction; outputs identical with and without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codefoundry.generate import (
    BlockPool,
    Engine,
    KVCacheManager,
    Request,
    SamplingParams,
    Scheduler,
    generate,
    hash_block,
)
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

BS = 4


def admit(kv: KVCacheManager, seq_id: str, tokens: list[int], adapter: str | None = None) -> int:
    """Admit a sequence as the scheduler does (lookup, allocate the rest, compute, register); its cached tokens."""
    prefix = kv.lookup(tokens, adapter)
    assert kv.allocate(seq_id, len(tokens) - prefix.num_tokens, prefix) is not None
    kv.cache_blocks(seq_id, tokens, len(tokens), adapter)
    return prefix.num_tokens


# --- without a model -------------------------------------------------------------------------------------------

def test_block_hashes_chain_over_parent_tokens_and_adapter() -> None:
    h1 = hash_block(None, [1, 2, 3, 4])
    assert h1 == hash_block(None, [1, 2, 3, 4]) and len(h1) == 32
    assert h1 != hash_block(None, [1, 2, 3, 5]) and h1 != hash_block(None, [1, 2, 3, 4], "lora-a")
    assert hash_block(None, [1, 2, 3, 4], "lora-a") != hash_block(None, [1, 2, 3, 4], "lora-b")
    other_parent = hash_block(None, [9, 9, 9, 9])
    assert hash_block(h1, [5, 6, 7, 8]) != hash_block(other_parent, [5, 6, 7, 8])


def test_a_shared_prefix_hits_its_full_blocks_only() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=BS)
    first = list(range(1, 11))                              # blocks [1-4] [5-8], partial [9 10]
    assert admit(kv, "a", first) == 0
    assert kv.num_cached_blocks == 2                         # the partial block is not cached
    second = [*first[:8], 50, 51, 52, 53, 54]
    prefix = kv.lookup(second)
    assert prefix.block_ids == kv.block_table("a")[:2] and prefix.num_tokens == 8
    kv.allocate("b", len(second) - 8, prefix)
    assert kv.block_table("b")[:2] == kv.block_table("a")[:2]     # shared, not copied
    assert kv.pool.ref_count[kv.block_table("a")[0]] == 2
    assert (kv.stats.queries, kv.stats.hits) == (10 + 13, 8)


def test_no_hit_on_another_adapter_or_a_different_earlier_block() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=BS)
    tokens = list(range(1, 14))
    admit(kv, "a", tokens)
    assert kv.lookup(tokens, "lora-x").num_tokens == 0
    changed_first = [99, *tokens[1:]]                       # blocks 2 and 3 equal a's, but their parent differs
    assert kv.lookup(changed_first).num_tokens == 0
    changed_second = [*tokens[:5], 99, *tokens[6:]]
    assert kv.lookup(changed_second).num_tokens == BS       # stops at the first different block
    assert kv.lookup(tokens).num_tokens == 12


def test_the_last_token_is_never_a_hit() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=BS)
    tokens = list(range(1, 9))                              # exactly two full blocks
    admit(kv, "a", tokens)
    assert kv.lookup(tokens).num_tokens == BS               # the second block holds the last token: recomputed
    assert kv.lookup([*tokens, 9]).num_tokens == 2 * BS


def test_a_block_is_cached_only_once_full_of_computed_tokens() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=BS)
    tokens = list(range(1, 12))
    kv.allocate("a", 6, kv.lookup(tokens))                  # a chunk of 6: one full block, one half
    kv.cache_blocks("a", tokens, 6)
    assert kv.num_cached_blocks == 1 and kv.lookup(tokens).num_tokens == BS
    kv.allocate("a", 3)
    kv.cache_blocks("a", tokens, 9)
    assert kv.num_cached_blocks == 2 and kv.lookup(tokens).num_tokens == 2 * BS


def test_disabled_cache_never_hits() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=BS, enable_prefix_caching=False)
    tokens = list(range(1, 14))
    admit(kv, "a", tokens)
    kv.free("a")
    assert kv.num_cached_blocks == 0 and kv.lookup(tokens).num_tokens == 0


def test_freed_blocks_stay_cached_until_needed_and_are_evicted_least_recently_freed_first() -> None:
    kv = KVCacheManager(num_blocks=6, block_size=BS)
    a, b = [1] * 8 + [0], [2] * 8 + [0]                     # two full blocks each (+ a partial)
    admit(kv, "a", a)
    admit(kv, "b", b)
    a_blocks, b_blocks = kv.block_table("a"), kv.block_table("b")
    kv.free("a")
    kv.free("b")
    assert kv.num_used_blocks == 0 and kv.num_cached_blocks == 4
    assert kv.lookup([*a, 5]).num_tokens == 8               # still there after its request finished
    # free queue now: never-used, a's blocks (tail first), b's blocks (tail first); new blocks come from the front
    assert kv.allocate("c", 4) == [a_blocks[2]]             # a's uncached partial block was the oldest free one
    assert kv.allocate("d", 4) == [a_blocks[1]] and kv.num_cached_blocks == 3   # then a's tail block
    assert kv.lookup([*a, 5]).num_tokens == BS and kv.lookup([*b, 5]).num_tokens == 8
    assert kv.allocate("e", 8) == [a_blocks[0], b_blocks[2]]


def test_blocks_a_request_holds_are_never_evicted() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=BS)
    shared = [7] * 8
    admit(kv, "a", [*shared, 1])                            # 3 blocks, 2 cached
    assert kv.allocate("b", 8) is None                      # 1 free block: a's cached blocks are held, not evictable
    assert kv.lookup([*shared, 2]).num_tokens == 8 and kv.num_used_blocks == 3
    prefix = kv.lookup([*shared, 2, 3, 4, 5, 6])            # 8 cached + 5 new: needs 2 new blocks, only 1 free
    assert kv.allocate("c", 5, prefix) is None and kv.pool.ref_count[prefix.block_ids[0]] == 1
    assert kv.allocate("c", 1, kv.lookup([*shared, 2])) == [3]   # room for the rest: shares a's two blocks
    kv.free("a")
    assert kv.num_used_blocks == 3 and kv.pool.ref_count[prefix.block_ids[0]] == 1   # c still holds them
    kv.free("c")
    assert kv.num_used_blocks == 0
    with pytest.raises(ValueError, match="not held"):
        kv.pool.release([0])


def test_a_free_cached_block_counts_against_the_pool_when_reused() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=BS)
    admit(kv, "a", [3] * 8 + [1])
    kv.free("a")                                            # 3 free, 2 of them cached
    prefix = kv.lookup([3] * 8 + [1, 2, 3, 4, 5])           # reuses 2, needs 2 more: 4 > 3
    assert kv.allocate("b", 5, prefix) is None
    assert kv.pool.num_free == 3 and kv.num_cached_blocks == 2          # nothing taken, nothing evicted


def test_block_pool_refuses_a_second_block_for_one_hash() -> None:
    pool = BlockPool(4)
    [x, y] = pool.take(2)
    h = hash_block(None, [1, 2])
    assert pool.register(x, h) and not pool.register(y, h) and pool.cached_block(h) == x
    assert not pool.register(x, hash_block(None, [3, 4]))   # a block keeps the hash it was filled with


def test_scheduler_admits_a_request_with_its_cached_prefix_counted() -> None:
    kv = KVCacheManager(num_blocks=32, block_size=BS)
    sched = Scheduler(kv, max_batch_tokens=64, max_batch_size=8)
    first = Request("a", list(range(1, 15)))
    sched.add_request(first)
    out = sched.schedule()
    sched.update(out, {"a": 99}, ["a"])
    again = Request("b", list(range(1, 15)))
    logprobs = Request("c", list(range(1, 15)), use_prefix_cache=False)
    other_adapter = Request("d", list(range(1, 15)), adapter_id="lora-x")
    for r in (again, logprobs, other_adapter):
        sched.add_request(r)
    plan = {s.request_id: (s.num_computed_tokens, s.num_new_tokens) for s in sched.schedule().scheduled}
    assert plan == {"b": (12, 2), "c": (0, 14), "d": (0, 14)}
    assert sched.requests["b"].num_computed_tokens == 12


# --- with the tiny model ---------------------------------------------------------------------------------------

FILE = ("import os\nimport sys\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n\n\n"
        "def write(path, text):\n    with open(path, 'w') as f:\n        f.write(text)\n\n\nclass Cache:\n"
        "    def __init__(self):\n        self.items = {}\n")


@pytest.fixture(scope="module")
def model_and_tokenizer(peaky_model_dir: Path):
    return load_model(peaky_model_dir, dtype=torch.float64), load_tokenizer(peaky_model_dir)


def _keystrokes(tokenizer) -> list[list[int]]:
    """An IDE session: the same file re-sent with a growing tail, and one prompt sharing only its start."""
    ids = tokenizer.encode(FILE)
    return [ids, ids[:-3], ids + tokenizer.encode("    def get("), ids + tokenizer.encode("    def put("),
            ids[:len(ids) // 2] + tokenizer.encode("x = 1\n"), ids]


def _run(engine: Engine, prompts: list[list[int]], params: list[SamplingParams], one_at_a_time: bool):
    """Completions in order; one request at a time (each sees its predecessors' cache), or all at once."""
    done = {}
    pending = list(enumerate(zip(prompts, params, strict=True)))
    while pending or engine.has_unfinished():
        if pending and (not one_at_a_time or not engine.has_unfinished()):
            for i, (p, sp) in (pending[:1] if one_at_a_time else pending):
                engine.add_request(i, p, sp)
            pending = pending[1:] if one_at_a_time else []
        for e in engine.step().outputs:
            if e.completion:
                done[e.request_id] = e.completion
    return [done[i] for i in range(len(prompts))]


def _params() -> list[SamplingParams]:
    greedy = SamplingParams(max_new_tokens=12, ignore_eos=True, top_n_tokens=2)
    seeded = [SamplingParams(max_new_tokens=12, ignore_eos=True, temperature=0.8, top_p=0.9, seed=s)
              for s in range(3)]
    return [greedy, seeded[0], greedy, seeded[1], greedy, seeded[2]]


@pytest.mark.parametrize("one_at_a_time", [True, False], ids=["sequential", "concurrent"])
def test_outputs_are_identical_with_and_without_the_cache(model_and_tokenizer, one_at_a_time: bool) -> None:
    model, tokenizer = model_and_tokenizer
    prompts, params = _keystrokes(tokenizer), _params()
    cached = Engine(model, tokenizer, num_blocks=128, block_size=BS, max_batch_tokens=32)
    plain = Engine(model, tokenizer, num_blocks=128, block_size=BS, max_batch_tokens=32, enable_prefix_caching=False)
    with_cache = _run(cached, prompts, params, one_at_a_time)
    without = _run(plain, prompts, params, one_at_a_time)
    for c, p in zip(with_cache, without, strict=True):
        assert c.token_ids == p.token_ids and c.text == p.text
        assert c.logprobs == pytest.approx(p.logprobs, abs=1e-9)          # float64: equal but for summation order
        assert [[i for i, _ in t.top_tokens] for t in c.tokens] == [[i for i, _ in t.top_tokens] for t in p.tokens]
    stats = cached.stats()
    assert plain.stats().prefix_cache_hits == 0 and stats.prefix_cache_hits > 0
    if one_at_a_time:                    # every prompt after the first starts with at least a half-file hit
        assert stats.prefix_cache_hits >= sum(len(p) // 2 // BS * BS for p in prompts[1:])


def test_second_identical_request_hits_and_prompt_logprobs_bypass_the_hit(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, num_blocks=64, block_size=BS)
    params = SamplingParams(max_new_tokens=4, ignore_eos=True)
    ids = tokenizer.encode(FILE)
    [first] = _run(engine, [ids], [params], True)
    assert engine.stats().prefix_cache_hits == 0 and engine.stats().prefix_cache_queries == len(ids)
    [second] = _run(engine, [ids], [params], True)
    stats = engine.stats()
    assert stats.prefix_cache_hits == (len(ids) - 1) // BS * BS and 0.4 < stats.prefix_cache_hit_rate < 0.5
    assert second.token_ids == first.token_ids
    details = SamplingParams(max_new_tokens=4, ignore_eos=True, decoder_input_details=True)
    [with_details] = _run(engine, [ids], [details], True)
    [reference] = generate(model, tokenizer, [ids], details, enable_prefix_caching=False)
    assert engine.stats().prefix_cache_hits == stats.prefix_cache_hits      # no lookup: logits for every token
    assert len(with_details.prefill_logprobs) == len(ids) and with_details.token_ids == first.token_ids
    assert with_details.prefill_logprobs[1:] == pytest.approx(reference.prefill_logprobs[1:], abs=1e-9)


def test_identical_outputs_under_memory_pressure_with_evictions_and_preemption(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    prompts, params = _keystrokes(tokenizer), _params()
    prompts, params = prompts * 2, [p.__class__(**{**p.__dict__, "max_new_tokens": 24}) for p in params * 2]
    longest = max(len(p) for p in prompts) + 24
    num_blocks = -(-longest // BS) + 4                      # one long sequence and a bit: constant eviction
    tight = Engine(model, tokenizer, num_blocks=num_blocks, block_size=BS, max_batch_tokens=24)
    evicted, preempted, done = 0, 0, {}
    for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
        tight.add_request(i, p, sp)
    while tight.has_unfinished():
        before = tight.stats().num_cached_blocks
        step = tight.step()
        preempted += len(step.preempted_ids)
        evicted += max(0, before - tight.stats().num_cached_blocks)
        assert tight.stats().num_used_blocks <= num_blocks
        done.update({e.request_id: e.completion for e in step.outputs if e.completion})
    reference = generate(model, tokenizer, prompts, params, enable_prefix_caching=False)
    assert preempted > 0 and evicted > 0 and tight.stats().prefix_cache_hits > 0
    for i, ref in enumerate(reference):
        assert done[i].token_ids == ref.token_ids
        assert done[i].logprobs == pytest.approx(ref.logprobs, abs=1e-9)
    assert tight.stats().num_used_blocks == 0
