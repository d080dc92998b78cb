"""The engine loop: one background thread steps the generation core's `Engine`; requests talk to it via queues.

HTTP handlers (asyncio) `submit()` a `ValidRequest` and read `StepOutput`s from an asyncio
queue; the thread applies adds and aborts between steps (the engine is not thread-safe),
runs `Engine.step()` (Scheduler → ModelRunner → Sampler → StopChecker/detokenizer → Scheduler
update), and hands its outputs to their requests' event loop with one `call_soon_threadsafe`
per loop and step (one wake-up of the loop for the whole batch, not one per token). The
metrics come from what the step returns (`EngineOutputs`) and `Engine.stats()`, never from
the engine's queues. A failing step fails every in-flight request with a `generation`
error and frees their blocks; the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from codefoundry.generate import Engine, SamplingParams, StepOutput, ValidationError
from codefoundry.serve.errors import ServeError
from codefoundry.serve.metrics import Metrics
from codefoundry.serve.tracing import RequestTimes
from codefoundry.serve.validation import ValidRequest

log = logging.getLogger(__name__)


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    times: RequestTimes
    done: bool = False


@dataclass
class RequestHandle:
    """The caller's side of one request: iterate it for `StepOutput`s until one carries a completion."""

    request_id: int
    engine_loop: EngineLoop
    stream: _Stream
    finished: bool = field(default=False)

    async def __aiter__(self) -> AsyncIterator[StepOutput]:
        try:
            while True:
                item = await self.stream.queue.get()
                if isinstance(item, ServeError):
                    self.finished = True
                    raise item
                yield item
                if item.completion is not None:
                    self.finished = True
                    return
        finally:
            if not self.finished:          # the client went away (cancelled): free its blocks
                self.engine_loop.abort(self.request_id)


class EngineLoop:
    """Owns the `Engine` and the thread that steps it."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine, self.metrics = engine, metrics
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, int, object]] = []
        self._streams: dict[int, _Stream] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="codefoundry-engine", daemon=True)
        self.steps = 0
        s = engine.stats()                 # the warmup's lookups are not the clients'
        self._prefix_start = (s.prefix_cache_queries, s.prefix_cache_hits)
        self._prefix_counted = (0, 0)      # (queries, hits) since start already added to the counters

    def start(self) -> None:
        self._thread.start()
        self._update_gauges()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def submit(self, valid: ValidRequest, times: RequestTimes) -> RequestHandle:
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue(), times)
        rid = next(self._ids)
        with self._cond:
            self._inbox.append(("add", rid, (valid, stream)))
            self._cond.notify()
        return RequestHandle(rid, self, stream)

    def abort(self, request_id: int) -> None:
        with self._cond:
            self._inbox.append(("abort", request_id, None))
            self._cond.notify()

    async def call(self, method: str, *args: object) -> object:
        """`engine.<method>(*args)` run on the engine thread between steps (the engine is not thread-safe);
        its result, or its exception raised here."""
        future = asyncio.get_running_loop().create_future()
        with self._cond:
            self._inbox.append(("call", -1, (method, args, future)))
            self._cond.notify()
        return await future

    # ---- engine thread ----

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self.engine.has_unfinished() and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                commands, self._inbox = self._inbox, []
            for kind, rid, payload in commands:
                if kind == "call":
                    self._call(*payload)
                else:
                    self._add(rid, *payload) if kind == "add" else self._abort(rid)
            if self.engine.has_unfinished():
                self._step()
            self._update_gauges()

    def _add(self, rid: int, valid: ValidRequest, stream: _Stream) -> None:
        self._streams[rid] = stream
        try:
            self.engine.add_request(rid, valid.input_ids, valid.params)
        except ValidationError as e:
            self._deliver(rid, ServeError("validation", str(e)))

    def _call(self, method: str, args: tuple, future: asyncio.Future) -> None:
        try:
            result, error = getattr(self.engine, method)(*args), None
        except Exception as e:  # the caller's to handle (e.g. an adapter that cannot be loaded)
            result, error = None, e
        loop = future.get_loop()

        def settle() -> None:
            if not future.done():
                future.set_result(result) if error is None else future.set_exception(error)
        with contextlib.suppress(RuntimeError):    # the caller's event loop is closed: nobody is waiting
            loop.call_soon_threadsafe(settle)

    def _abort(self, rid: int) -> None:
        if self._streams.pop(rid, None) is not None and self.engine.abort(rid):
            self.metrics.requests_aborted.inc()

    def _step(self) -> None:
        start = time.time_ns()
        try:
            result = self.engine.step()
        except Exception as e:  # a failed step fails its requests, never the server
            log.exception("engine step failed")
            self.metrics.batch_inference_failure.labels(method="decode").inc()
            for rid in list(self._streams):
                self.engine.abort(rid)
                self._deliver(rid, ServeError("generation", f"{type(e).__name__}: {e}"))
            return
        seconds = (time.time_ns() - start) / 1e9
        started = [rid for rid in result.admitted_ids
                   if rid in self._streams and self._streams[rid].times.scheduled == 0]
        method = "prefill" if started else "decode"
        if result.num_scheduled:
            self.metrics.batch_inference_count.labels(method=method).inc()
            self.metrics.batch_inference_success.labels(method=method).inc()
            self.metrics.batch_forward_duration.labels(method=method).observe(seconds)
            self.metrics.batch_next_size.observe(result.num_scheduled)
        for rid in started:
            self._streams[rid].times.scheduled = start
        now = time.time_ns()
        for out in result.outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            if stream.times.first_token == 0:
                stream.times.first_token = now
            if out.completion is not None:
                stream.times.done = now
        self._deliver_all([(out.request_id, out) for out in result.outputs])
        self.steps += 1

    def _deliver(self, rid: int, item: StepOutput | ServeError) -> None:
        self._deliver_all([(rid, item)])

    def _deliver_all(self, items: list[tuple[int, StepOutput | ServeError]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[int, asyncio.Queue, StepOutput | ServeError]]] = {}
        for rid, item in items:
            stream = self._streams.get(rid)
            if stream is None:
                continue
            if isinstance(item, ServeError) or item.completion is not None:
                del self._streams[rid]
            by_loop.setdefault(stream.loop, []).append((rid, stream.queue, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:           # the requests' event loop is closed: nobody is listening
                for rid, _, _ in batch:
                    self.engine.abort(rid)

    def _update_gauges(self) -> None:
        s, m = self.engine.stats(), self.metrics
        m.queue_size.set(s.num_waiting)
        m.batch_current_size.set(s.num_running)
        m.kv_blocks_total.set(s.num_blocks)
        m.kv_blocks_used.set(s.num_used_blocks)
        m.batch_current_max_tokens.set(s.num_used_blocks * s.block_size)
        m.preemptions.set(s.num_preemptions)
        m.kv_blocks_cached.set(s.num_cached_blocks)
        queries, hits = s.prefix_cache_queries - self._prefix_start[0], s.prefix_cache_hits - self._prefix_start[1]
        m.prefix_cache_queries.inc(queries - self._prefix_counted[0])
        m.prefix_cache_hits.inc(hits - self._prefix_counted[1])
        m.prefix_cache_hit_ratio.set(hits / queries if queries else 0.0)
        self._prefix_counted = (queries, hits)


def _put_all(batch: list[tuple[int, asyncio.Queue, StepOutput | ServeError]]) -> None:
    for _, queue, item in batch:
        queue.put_nowait(item)


def warmup(engine: Engine, num_tokens: int) -> float:
    """Run one maximal prefill of `num_tokens` tokens (TGI's warmup); returns its seconds."""
    vocab = len(engine.tokenizer)
    ids = [(i * 7919) % vocab for i in range(num_tokens)]
    start = time.perf_counter()
    engine.add_request("warmup", ids, SamplingParams(max_new_tokens=1, ignore_eos=True))
    while engine.has_unfinished():
        engine.step()
    return time.perf_counter() - start
