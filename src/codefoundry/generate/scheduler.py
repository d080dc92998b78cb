"""The scheduler: which requests compute how many tokens each step (vLLM v1's Scheduler).

It owns the waiting and running queues and a per-step token budget, and decides; it computes
nothing. There is no prefill/decode split: every request has `num_computed_tokens` (its
tokens already in the KV cache) and each step it is given `min(tokens it lacks, budget
left)` more, so a long prompt is prefilled in chunks beside other requests' decode steps
(chunked prefill), and decoding is the case where the lack is one token.

    schedule()  running requests first, in admission order, then waiting ones from the front
                (not in a step that preempted): slots are allocated for each; → SchedulerOutput
    update()    the step's sampled tokens come back: computed counts advance, tokens are
                appended, finished requests leave running and free their blocks
    abort()     drop a waiting or running request and free its blocks

A waiting request that has computed nothing asks the allocator for its cached prefix (full
blocks other requests computed, never its last token: its logits pick the next token) and
starts with those tokens counted as computed; chunked prefill computes the rest. Requests
that want logits for every prompt token (prompt logprobs) skip the lookup, as in vLLM.
After each step the blocks it filled are registered for later requests to find.

A decoding request may carry a draft (`Request.spec_token_ids`, prompt-lookup speculative
decoding): it is scheduled with its last token (budget permitting; without it when the pool
is short, before preempting anyone), and `update()` keeps the computed count and slots of
the accepted draft tokens only (`BlockAllocator.trim`).

When the pool cannot hold a running request's new tokens, the newest running request is
preempted (freed, and put at the front of waiting with 0 computed tokens, to be recomputed
from its prompt and the tokens it already has: vLLM's recompute preemption), until the
request fits or is itself the one preempted.

The KV-cache manager is reached only through `BlockAllocator` (allocate slots → new block
ids or None, free, block table, prefix lookup, registering filled blocks). Nothing here
assumes one adapter (request ids are opaque hashables, and a request's `adapter_id` is part
of its block hashes), or one process (`SchedulerOutput` is plain, picklable data for a
runner elsewhere).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from codefoundry.generate.params import ValidationError
from codefoundry.generate.prefix_cache import CachedPrefix


class BlockAllocator(Protocol):
    """What the scheduler needs from a KV-cache manager (`KVCacheManager` is one)."""

    def lookup(self, token_ids: Sequence[int], adapter_id: Hashable | None) -> CachedPrefix:
        """The cached full blocks a new request can start from (never its last token)."""

    def allocate(self, request_id: Hashable, num_new_tokens: int, prefix: CachedPrefix = ...) -> list[int] | None:
        """Slots for `num_new_tokens` more tokens (after `prefix`, for a new request): the newly taken block
        ids, or None (nothing taken) when full."""

    def cache_blocks(self, request_id: Hashable, token_ids: Sequence[int], num_computed_tokens: int,
                     adapter_id: Hashable | None) -> None:
        """Make the request's blocks that are full of computed tokens findable by `lookup`."""

    def free(self, request_id: Hashable) -> int:
        """Give back every block of the request."""

    def block_table(self, request_id: Hashable) -> list[int]:
        """The request's block ids, in token order."""

    def trim(self, request_id: Hashable, num_tokens: int) -> int:
        """Shrink the request's slots to its first `num_tokens`, giving back the blocks past them."""


@dataclass(eq=False)             # identity: two requests are never the same one
class Request:
    """The scheduler's view of one request: its tokens, and how many of them are in the KV cache."""

    request_id: Hashable
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)   # prompt + generated; filled from the prompt
    num_computed_tokens: int = 0
    adapter_id: Hashable | None = None      # the weights its K/V depend on (a LoRA adapter), part of block hashes
    use_prefix_cache: bool = True           # False: compute every prompt token (prompt logprobs need their logits)
    spec_token_ids: list[int] = field(default_factory=list)   # draft tokens to verify after its last token

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids):]


@dataclass(frozen=True)
class ScheduledRequest:
    """One request's share of a step: compute `token_ids[num_computed_tokens : + num_new_tokens]`."""

    request_id: Hashable
    num_computed_tokens: int        # already in the KV cache before this step
    num_new_tokens: int             # computed this step
    block_ids: list[int]            # its whole block table, holding at least computed + new slots
    spec_token_ids: list[int] = field(default_factory=list)   # the last len() of the new tokens: a draft to verify

    @property
    def num_tokens_after(self) -> int:
        return self.num_computed_tokens + self.num_new_tokens


@dataclass
class SchedulerOutput:
    """One step's plan. Empty (nothing scheduled) when there is nothing to run or no room."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)      # in batch order
    admitted_ids: list[Hashable] = field(default_factory=list)   # moved from waiting to running this step
    preempted_ids: list[Hashable] = field(default_factory=list)  # freed and sent back to waiting this step
    finished_ids: list[Hashable] = field(default_factory=list)   # finished or aborted since the previous step

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    """Waiting and running queues over one block allocator (see the module docstring)."""

    def __init__(self, allocator: BlockAllocator, *, max_batch_tokens: int, max_batch_size: int) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValidationError(f"max_batch_tokens and max_batch_size must be >= 1, "
                                  f"got {max_batch_tokens} and {max_batch_size}")
        self.allocator = allocator
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[Hashable, Request] = {}
        self.num_preemptions = 0                # since start
        self._finished: list[Hashable] = []     # since the last schedule()

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def add_request(self, request: Request) -> None:
        """Queue `request` at the back of waiting."""
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already queued")
        if request.num_computed_tokens >= request.num_tokens:
            raise ValueError(f"request {request.request_id!r} has nothing left to compute")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def abort(self, request_id: Hashable) -> bool:
        """Drop a waiting or running request and free its blocks; False if it is not here."""
        request = self.requests.get(request_id)
        if request is None:
            return False
        if request in self.running:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._finish(request)
        return True

    def schedule(self) -> SchedulerOutput:
        """This step's plan, with KV slots allocated for every scheduled token."""
        budget = self.max_batch_tokens
        scheduled: list[ScheduledRequest] = []
        preempted: list[Hashable] = []
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            n = min(request.num_tokens - request.num_computed_tokens, budget)   # >= 1: update() sampled for it
            draft = request.spec_token_ids[:budget - 1] if n == 1 else []
            request.spec_token_ids = []
            if draft and self.allocator.allocate(request.request_id, 1 + len(draft)) is None:
                draft = []                               # no room for a draft: decode without one, preempt no one
            while not draft and self.allocator.allocate(request.request_id, n) is None:
                victim = self.running.pop()              # the newest running request
                self._preempt(victim)
                preempted.append(victim.request_id)
                if victim is request:                    # it was the newest: nothing left to schedule
                    break
            else:
                scheduled.append(self._scheduled(request, n + len(draft), draft))
                budget -= n + len(draft)
                i += 1
        admitted: list[Hashable] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_batch_size and not preempted:
            request = self.waiting[0]
            prefix = None
            if request.num_computed_tokens == 0 and request.use_prefix_cache:
                prefix = self.allocator.lookup(request.token_ids, request.adapter_id)
            start = prefix.num_tokens if prefix is not None else request.num_computed_tokens
            n = min(request.num_tokens - start, budget)
            new = (self.allocator.allocate(request.request_id, n) if prefix is None
                   else self.allocator.allocate(request.request_id, n, prefix))
            if new is None:
                break
            request.num_computed_tokens = start
            self.waiting.popleft()
            self.running.append(request)
            admitted.append(request.request_id)
            scheduled.append(self._scheduled(request, n))
            budget -= n
        finished, self._finished = self._finished, []
        return SchedulerOutput(scheduled, admitted, preempted, finished)

    def update(self, output: SchedulerOutput, sampled: Mapping[Hashable, int | Sequence[int]],
               finished: Collection[Hashable] = ()) -> None:
        """Take a step's results back.

        Every request scheduled in `output` (and not aborted since) has its computed count
        advanced; `sampled` maps the requests that caught up to the token sampled for them
        (or, for a request that verified a draft, the tokens kept: the accepted draft tokens
        and the one sampled after them), which are appended; the slots of rejected draft
        tokens are given back. The ones in `finished` (stop rule or length reached: the
        caller's stop rules decide) leave running and free their blocks.
        """
        for s in output.scheduled:
            request = self.requests.get(s.request_id)
            if request is None:                          # aborted between schedule() and update()
                continue
            new = sampled.get(s.request_id, ())
            new = [new] if isinstance(new, int) else list(new)
            request.token_ids.extend(new)
            request.num_computed_tokens = s.num_tokens_after
            if s.spec_token_ids:                        # K/V of the accepted draft tokens stay; the rest go
                request.num_computed_tokens -= len(s.spec_token_ids) - max(len(new) - 1, 0)
                self.allocator.trim(request.request_id, request.num_computed_tokens)
            self.allocator.cache_blocks(request.request_id, request.token_ids, request.num_computed_tokens,
                                        request.adapter_id)
        for request_id in finished:
            request = self.requests.get(request_id)
            if request is not None and request in self.running:
                self.running.remove(request)
                self._finish(request)

    def _scheduled(self, request: Request, n: int, draft: list[int] | None = None) -> ScheduledRequest:
        return ScheduledRequest(request.request_id, request.num_computed_tokens, n,
                                self.allocator.block_table(request.request_id), draft or [])

    def _preempt(self, request: Request) -> None:
        self.allocator.free(request.request_id)
        request.num_computed_tokens = 0
        request.spec_token_ids = []
        self.waiting.appendleft(request)
        self.num_preemptions += 1

    def _finish(self, request: Request) -> None:
        self.allocator.free(request.request_id)
        del self.requests[request.request_id]
        self._finished.append(request.request_id)
