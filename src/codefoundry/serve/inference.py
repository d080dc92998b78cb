"""Running validated requests through the engine loop, shared by the TGI and OpenAI routes.

`validated` times validation; `events` yields a request's `StepOutput`s; `complete` runs one
to its `Completion` (a client that disconnects first aborts it); `record` feeds the metrics and
the spans once a request is done; `timing_headers` are TGI's `x-*` response headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request

from codefoundry.generate import Completion, StepOutput
from codefoundry.serve.errors import ServeError
from codefoundry.serve.state import ServerState
from codefoundry.serve.tracing import RequestTimes, record_request_spans
from codefoundry.serve.validation import ValidRequest

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

    task = asyncio.ensure_future(run())

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
