"""Scheduler without a model: token budget, chunked prefill, batch size, preemption order, finish, abort."""

from __future__ import annotations

import pickle
from collections.abc import Collection, Hashable

import pytest

from codefoundry.generate import KVCacheManager, Request, Scheduler, SchedulerOutput, ValidationError


def make(num_blocks: int = 64, block_size: int = 4, max_batch_tokens: int = 64,
         max_batch_size: int = 256) -> tuple[Scheduler, KVCacheManager]:
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=False)   # prompts here share prefixes
    return Scheduler(kv, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size), kv


def add(sched: Scheduler, rid: Hashable, prompt_len: int) -> Request:
    request = Request(rid, list(range(1, prompt_len + 1)))
    sched.add_request(request)
    return request


def plan_of(out: SchedulerOutput) -> list[tuple[Hashable, int, int]]:
    return [(s.request_id, s.num_computed_tokens, s.num_new_tokens) for s in out.scheduled]


def step(sched: Scheduler, finished: Collection[Hashable] = ()) -> SchedulerOutput:
    """Schedule, then hand back a token (7) for every request that caught up, as the engine does."""
    out = sched.schedule()
    caught_up = [s.request_id for s in out.scheduled
                 if s.num_tokens_after == sched.requests[s.request_id].num_tokens]
    sched.update(out, {rid: 7 for rid in caught_up}, [rid for rid in finished if rid in caught_up])
    return out


def test_token_budget_is_shared_running_first_then_waiting_in_order() -> None:
    sched, _ = make(max_batch_tokens=16)
    for rid in "abc":
        add(sched, rid, 10)
    first = step(sched)
    assert plan_of(first) == [("a", 0, 10), ("b", 0, 6)]             # c waits: no budget left
    assert first.admitted_ids == ["a", "b"] and first.num_scheduled_tokens == 16
    assert pickle.loads(pickle.dumps(first)) == first                 # plain data: can go to another process
    assert sched.num_running == 2 and sched.num_waiting == 1
    second = step(sched)
    assert plan_of(second) == [("a", 10, 1), ("b", 6, 4), ("c", 0, 10)]   # a decodes, b's prompt catches up
    assert second.admitted_ids == ["c"] and second.num_scheduled_tokens == 15
    assert sched.requests["a"].output_token_ids == [7, 7] and sched.requests["b"].output_token_ids == [7]


def test_chunked_prefill_catches_up_over_steps_and_blocks_grow_with_it() -> None:
    sched, kv = make(block_size=4, max_batch_tokens=8)
    request = add(sched, "long", 25)
    chunks = []
    for _ in range(4):
        out = step(sched)
        [s] = out.scheduled
        chunks.append((s.num_computed_tokens, s.num_new_tokens, len(s.block_ids)))
        assert s.block_ids == kv.block_table("long")
    assert chunks == [(0, 8, 2), (8, 8, 4), (16, 8, 6), (24, 1, 7)]   # 25 tokens need 7 blocks of 4
    assert request.output_token_ids == [7] and request.num_computed_tokens == 25
    assert plan_of(step(sched)) == [("long", 25, 1)]                   # then one token per step
    assert request.num_tokens == 27 and len(kv.block_table("long")) == 7


def test_batch_size_caps_the_running_requests() -> None:
    sched, _ = make(max_batch_size=2)
    for rid in "abc":
        add(sched, rid, 3)
    assert plan_of(step(sched)) == [("a", 0, 3), ("b", 0, 3)]
    assert plan_of(step(sched, finished=["a"])) == [("a", 3, 1), ("b", 3, 1)]
    out = step(sched)
    assert out.finished_ids == ["a"] and plan_of(out) == [("b", 4, 1), ("c", 0, 3)]


def test_newest_running_request_is_preempted_first_and_requeued_at_the_front() -> None:
    sched, kv = make(num_blocks=4, block_size=4)
    for rid in "abcd":
        add(sched, rid, 4)
    assert step(sched).admitted_ids == list("abcd") and kv.num_used_blocks == 4      # pool full
    add(sched, "e", 4)
    out = sched.schedule()                   # a and b each open a 2nd block: d goes for a, then c for b
    assert out.preempted_ids == ["d", "c"] and plan_of(out) == [("a", 4, 1), ("b", 4, 1)]
    assert out.admitted_ids == []            # no admissions in a step that preempted
    assert [r.request_id for r in sched.waiting] == ["c", "d", "e"]
    assert all(sched.requests[r].num_computed_tokens == 0 and kv.block_table(r) == [] for r in "cd")
    assert sched.num_preemptions == 2
    sched.update(out, {"a": 7, "b": 7}, ["a"])                   # a finishes: c comes back first
    again = sched.schedule()
    assert again.finished_ids == ["a"] and again.admitted_ids == ["c"]
    assert plan_of(again) == [("b", 5, 1), ("c", 0, 5)]      # c recomputes its prompt and its generated token
    assert sched.requests["c"].output_token_ids == [7]


def test_a_request_that_is_itself_the_newest_preempts_itself() -> None:
    sched, kv = make(num_blocks=3, block_size=2)
    add(sched, "a", 1)
    add(sched, "b", 4)                       # a: 1 block, b: 2 blocks: pool full
    step(sched)
    out = sched.schedule()                   # a's 2nd token fits its block; b's 5th needs a 3rd block
    assert plan_of(out) == [("a", 1, 1)] and out.preempted_ids == ["b"]
    assert kv.block_table("b") == [] and [r.request_id for r in sched.waiting] == ["b"]


def test_a_step_that_preempted_admits_nothing() -> None:
    """Else the victim, at the front of waiting, would come straight back with a chunk that fits, and thrash."""
    sched, kv = make(num_blocks=3, block_size=4, max_batch_tokens=4)
    add(sched, "a", 4)
    add(sched, "c", 7)
    assert plan_of(step(sched)) == [("a", 0, 4)]
    assert plan_of(step(sched)) == [("a", 4, 1), ("c", 0, 3)]     # pool full now
    out = sched.schedule()                   # c's next chunk (tokens 3..5) needs a 2nd block: c preempts itself
    assert plan_of(out) == [("a", 5, 1)] and out.preempted_ids == ["c"] and out.admitted_ids == []
    assert kv.num_used_blocks == 2 and [r.request_id for r in sched.waiting] == ["c"]


def test_finish_frees_blocks_and_is_reported_once() -> None:
    sched, kv = make()
    add(sched, "a", 5)
    add(sched, "b", 5)
    step(sched, finished=["a"])
    assert kv.block_table("a") == [] and kv.num_used_blocks == 2 and "a" not in sched.requests
    out = sched.schedule()
    assert out.finished_ids == ["a"] and plan_of(out) == [("b", 5, 1)]
    sched.update(out, {"b": 9}, ["b"])
    assert not sched.has_unfinished() and kv.num_used_blocks == 0
    idle = sched.schedule()
    assert idle.is_empty and idle.finished_ids == ["b"] and sched.schedule().finished_ids == []


def test_abort_of_waiting_and_running_requests() -> None:
    sched, kv = make(max_batch_tokens=8)
    add(sched, "run", 8)
    add(sched, "wait", 8)
    out = sched.schedule()
    assert plan_of(out) == [("run", 0, 8)] and kv.num_used_blocks == 2
    assert sched.abort("run") and sched.abort("wait")    # "run" between schedule() and update()
    assert not sched.abort("run") and not sched.abort("never")
    sched.update(out, {"run": 7})                        # results of an aborted request are dropped
    assert kv.num_used_blocks == 0 and not sched.has_unfinished()
    assert sched.num_running == sched.num_waiting == 0
    after = sched.schedule()
    assert after.is_empty and after.finished_ids == ["run", "wait"]
    add(sched, "run", 2)                                 # the id can be used again
    assert plan_of(sched.schedule()) == [("run", 0, 2)]


def test_bad_input_is_refused() -> None:
    sched, _ = make()
    add(sched, "a", 3)
    with pytest.raises(ValueError, match="already queued"):
        add(sched, "a", 3)
    with pytest.raises(ValueError, match="nothing left to compute"):
        sched.add_request(Request("b", [1, 2], num_computed_tokens=2))
    with pytest.raises(ValidationError, match="must be >= 1"):
        Scheduler(KVCacheManager(4, 4), max_batch_tokens=0, max_batch_size=1)
