"""Running validated requests through the engine loop, shared by the TGI and OpenAI routes.

`validated` times validation; `events` yields a request's `StepOutput`s; `complete` runs one
to its `Completion` (a client that disconnects first aborts it); `record` feeds the metrics and
the spans once a request is done; `timing_headers` are TGI's `x-*` response headers.

Several sequences of one prompt (OpenAI's `n` and `best_of`, TGI's `best_of`) are `fan_out`
copies run by `group_events` / `complete_group`: the first runs alone until its prompt is
computed (its first token arrives), then the others start and find the prompt's full KV
blocks in the prefix cache, so the prompt is computed once (TGI primes its prefix cache for
best_of the same way); only the last, partial block is computed again per copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request

from codefoundry.generate import Completion, StepOutput
from codefoundry.generate.sampler import MASK64
from codefoundry.serve.errors import ServeError
from codefoundry.serve.state import ServerState
from codefoundry.serve.tracing import RequestTimes, record_request_spans
from codefoundry.serve.validation import ValidRequest

T = TypeVar("T")

log = logging.getLogger(__name__)
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


def validated(state: ServerState, inputs: str, validate: Callable[[], ValidRequest]) -> tuple[ValidRequest,
                                                                                            RequestTimes]:
    t = RequestTimes(start=time.time_ns())
    valid = validate()
    t.validated = time.time_ns()
    if state.config.log_prompts:
        log.info("prompt: %r", inputs)
    return valid, t


def stream_headers(state: ServerState) -> dict[str, str]:
    return {**STREAM_HEADERS, "x-compute-type": state.compute_type}


async def events(state: ServerState, valid: ValidRequest, t: RequestTimes) -> AsyncIterator[StepOutput]:
    async for out in state.engine_loop.submit(valid, t):
        yield out


async def complete(state: ServerState, request: Request, valid: ValidRequest, t: RequestTimes) -> Completion:
    """Run one request to completion; a client that disconnects first aborts it (its blocks are freed)."""
    async def run() -> Completion:
        async for out in events(state, valid, t):
            if out.completion is not None:
                return out.completion
        raise ServeError("generation", "the engine stopped without finishing the request")

    return await until_disconnected(request, run())


def fan_out(valid: ValidRequest, count: int) -> list[ValidRequest]:
    """`count` sequences of one request: copy i samples with seed + i (copy 0 is the request itself, so n=1 and
    n>1 agree on the first choice), and only copy 0 computes the prompt's logprobs (the others would repeat them)."""
    copies = [valid]
    for i in range(1, count):
        p = valid.params
        seed = None if p.seed is None else (p.seed + i) & MASK64
        copies.append(dataclasses.replace(valid, params=dataclasses.replace(p, seed=seed,
                                                                            decoder_input_details=False)))
    return copies


def group_times(t: RequestTimes, count: int) -> list[RequestTimes]:
    """One `RequestTimes` per sequence of a group (each is scheduled and finishes on its own)."""
    return [t] + [RequestTimes(start=t.start, validated=t.validated) for _ in range(count - 1)]


async def group_events(state: ServerState, valids: list[ValidRequest],
                       times: list[RequestTimes]) -> AsyncIterator[tuple[int, StepOutput]]:
    """`(copy index, StepOutput)` of every sequence of a group until all are complete (see the module docstring)."""
    if len(valids) == 1:
        async for out in events(state, valids[0], times[0]):
            yield 0, out
        return
    merged: asyncio.Queue = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            async for out in events(state, valids[i], times[i]):
                await merged.put((i, out))
        except ServeError as e:
            await merged.put((i, e))

    tasks = [asyncio.ensure_future(pump(0))]
    finished = 0
    try:
        while finished < len(valids):
            i, out = await merged.get()
            if isinstance(out, ServeError):
                raise out
            if len(tasks) == 1:          # the prompt is computed and its blocks registered: the others may start
                tasks += [asyncio.ensure_future(pump(j)) for j in range(1, len(valids))]
            finished += out.completion is not None
            yield i, out
    finally:
        for task in tasks:
            task.cancel()


async def complete_group(state: ServerState, request: Request, valids: list[ValidRequest],
                         times: list[RequestTimes]) -> list[Completion]:
    """Run a group to completion (one `Completion` per copy, in order); a client that disconnects first aborts it."""
    if len(valids) == 1:
        return [await complete(state, request, valids[0], times[0])]

    async def run() -> list[Completion]:
        done: dict[int, Completion] = {}
        async for i, out in group_events(state, valids, times):
            if out.completion is not None:
                done[i] = out.completion
        return [done[i] for i in range(len(valids))]

    return await until_disconnected(request, run())


def mean_logprob(c: Completion) -> float:
    """What best_of ranks sequences by: the mean logprob of the generated tokens (TGI, OpenAI's docs)."""
    return sum(t.logprob for t in c.tokens) / max(len(c.tokens), 1)


def record(state: ServerState, route: str, valid: ValidRequest, c: Completion, t: RequestTimes) -> None:
    m = state.metrics
    end = t.done or time.time_ns()
    m.request_duration.observe((end - t.start) / 1e9)
    m.request_validation_duration.observe((t.validated - t.start) / 1e9)
    if t.scheduled:
        m.request_queue_duration.observe(max(t.scheduled - t.validated, 0) / 1e9)
        m.request_inference_duration.observe(max(end - t.scheduled, 0) / 1e9)
        m.request_mean_time_per_token_duration.observe(max(end - t.scheduled, 0) / 1e9 / max(c.generated_tokens, 1))
    if t.first_token:
        m.request_time_to_first_token.observe(max(t.first_token - t.start, 0) / 1e9)
    m.request_input_length.observe(len(valid.input_ids))
    m.request_generated_tokens.observe(c.generated_tokens)
    m.request_max_new_tokens.observe(valid.params.max_new_tokens)
    t.attributes.update({"input_length": len(valid.input_ids), "generated_tokens": c.generated_tokens,
                         "finish_reason": str(c.finish_reason)})
    record_request_spans(state.tracer_provider, route, t)


def timing_headers(state: ServerState, valid: ValidRequest, c: Completion, t: RequestTimes) -> dict[str, str]:
    end = t.done or time.time_ns()
    sched = t.scheduled or t.validated
    ms = lambda a, b: str(max(b - a, 0) // 1_000_000)  # noqa: E731
    return {"x-compute-type": state.compute_type, "x-compute-time": f"{(end - t.start) / 1e9:.6f}",
            "x-compute-characters": str(len(valid.inputs)), "x-total-time": ms(t.start, end),
            "x-validation-time": ms(t.start, t.validated), "x-queue-time": ms(t.validated, sched),
            "x-inference-time": ms(sched, end),
            "x-time-per-token": str(max(end - sched, 0) // 1_000_000 // max(c.generated_tokens, 1)),
            "x-prompt-tokens": str(len(valid.input_ids)), "x-generated-tokens": str(c.generated_tokens)}


async def until_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, or a ServeError (and `work` cancelled, freeing its blocks) when the client goes first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ServeError("generation", "client disconnected")
    return task.result()
