"""The in-process engine back end: one background thread steps the `Engine`; requests talk to it via queues.

Used with `--no-engine-process` (and by tests that want the engine in reach). HTTP handlers
(asyncio) `submit()` a `ValidRequest` and read `StepOutput`s from their `RequestHandle`; the
thread applies adds, aborts and engine calls between steps (the engine is not thread-safe),
runs `Engine.step()` and hands the outputs to their requests' event loop (`StreamTable`). The
metrics come from what the step returns and `Engine.stats()`. A failing step fails every
in-flight request with a `generation` error and frees their blocks; the loop goes on.
`engine_client.EngineClient` is the same interface with the engine in its own process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from typing import Any

import msgspec

from codefoundry.generate import Engine, ValidationError
from codefoundry.serve.engine_metrics import EngineMetrics
from codefoundry.serve.errors import ServeError
from codefoundry.serve.metrics import Metrics
from codefoundry.serve.request_streams import RequestHandle, RequestStream, StreamTable
from codefoundry.serve.tracing import RequestTimes
from codefoundry.serve.validation import ValidRequest

log = logging.getLogger(__name__)


class EngineLoop:
    """Owns the `Engine` and the thread that steps it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metrics: Metrics | None = None
        self.special_ids: set[int] = set(engine.special_ids)
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, int, Any]] = []
        self._streams = StreamTable()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="codefoundry-engine", daemon=True)
        self._engine_metrics: EngineMetrics | None = None
        self.steps = 0

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive()

    def start(self, metrics: Metrics) -> None:
        """Begin stepping, with the engine's facts going into `metrics`."""
        self.metrics = metrics
        self._engine_metrics = EngineMetrics(metrics, self.engine.stats())   # warmup's lookups are not the clients'
        self._engine_metrics.gauges(self.engine.stats())
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def submit(self, valid: ValidRequest, times: RequestTimes) -> RequestHandle:
        stream = RequestStream(asyncio.get_running_loop(), asyncio.Queue(), times)
        rid = next(self._ids)
        self._streams.add(rid, stream)
        self._command("add", rid, valid)
        return RequestHandle(rid, self.abort, stream)

    def abort(self, request_id: int) -> None:
        self._command("abort", request_id, None)

    async def call(self, method: str, *args: Any) -> Any:
        """Run `engine.<method>(*args)` on the engine thread between two steps (or read the attribute); the result
        as plain data (a dataclass becomes a dict), or the method's exception raised here."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._command("call", 0, (method, args, loop, future))
        return await future

    def _command(self, kind: str, rid: int, payload: Any) -> None:
        with self._cond:
            self._inbox.append((kind, rid, payload))
            self._cond.notify()

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
                if kind == "add":
                    self._add(rid, payload)
                elif kind == "abort":
                    self._abort(rid)
                else:
                    self._call(*payload)
            if self.engine.has_unfinished():
                self._step()
            self._engine_metrics.gauges(self.engine.stats())

    def _add(self, rid: int, valid: ValidRequest) -> None:
        if rid not in self._streams:           # aborted before it was added
            return
        try:
            adapter = getattr(valid, "adapter_id", None)
            self.engine.add_request(rid, valid.input_ids, valid.params,
                                    **({} if adapter is None else {"adapter_id": adapter}))
        except ValidationError as e:
            self._streams.deliver([(rid, ServeError("validation", str(e)))])

    def _abort(self, rid: int) -> None:
        if self._streams.pop(rid) is not None and self.engine.abort(rid):
            self.metrics.requests_aborted.inc()

    def _call(self, method: str, args: tuple, loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
        try:
            if method.startswith("_"):
                raise AttributeError(f"engine method {method!r} is private")
            target = getattr(self.engine, method)
            # plain data, as across the process boundary: a route sees the same result from either back end
            value = msgspec.to_builtins(target(*args) if callable(target) else target)
        except Exception as e:
            loop.call_soon_threadsafe(_settle, future, None, e)
        else:
            loop.call_soon_threadsafe(_settle, future, value, None)

    def _step(self) -> None:
        start = time.time_ns()
        try:
            result = self.engine.step()
        except Exception as e:  # a failed step fails its requests, never the server
            log.exception("engine step failed")
            self._engine_metrics.step_failed()
            for rid in self._streams.ids():
                self.engine.abort(rid)
            self._streams.fail_all(ServeError("generation", f"{type(e).__name__}: {e}"))
            return
        seconds = (time.time_ns() - start) / 1e9
        started = [rid for rid in result.admitted_ids
                   if (s := self._streams.get(rid)) is not None and s.times.scheduled == 0]
        self._engine_metrics.step(seconds, result.num_scheduled, prefill=bool(started))
        for rid in started:
            self._streams.get(rid).times.scheduled = start
        now = time.time_ns()
        for out in result.outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            if stream.times.first_token == 0:
                stream.times.first_token = now
            if out.completion is not None:
                stream.times.done = now
        for rid in self._streams.deliver([(out.request_id, out) for out in result.outputs]):
            self.engine.abort(rid)
        self.steps += 1


def _settle(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
