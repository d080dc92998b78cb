"""The server's side of the engine-core process: start it, send it requests, route its step reports to requests.

    client = EngineClient(build_engine_for_process, (cfg.model_dump(mode="json"),))  # spawns the core, waits for READY
    client.info                                                 # what build_engine reported (pool size, …)
    client.start(metrics)                                       # the reader thread
    handle = client.submit(valid, times)                        # in a route: async for out in handle: …
    await client.call("stats")                                  # any Engine method, run in the core process
    client.stop()                                               # SHUTDOWN, join; exit code in client.exitcode

Same interface as `engine_loop.EngineLoop` (the engine on a thread of this process). Commands
go out on a ZeroMQ PUSH socket as they come; one reader thread receives the core's step
reports (every request's output of a step in one frame), rebuilds `StepOutput`s, updates the
metrics from the stats each report carries, and delivers to the requests' event loops. The
reader also watches the process: if it dies, every in-flight request and pending call fails
with a 503 `engine_unavailable` error, `healthy` turns False and `on_death` callbacks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from codefoundry.errors import UserError
from codefoundry.generate import EngineStats, SamplingParams, StepOutput
from codefoundry.generate import engine_core_process as core
from codefoundry.serve.engine_metrics import EngineMetrics
from codefoundry.serve.errors import ServeError
from codefoundry.serve.metrics import Metrics
from codefoundry.serve.request_streams import RequestHandle, RequestStream, StreamTable
from codefoundry.serve.tracing import RequestTimes
from codefoundry.serve.validation import ValidRequest

log = logging.getLogger(__name__)
POLL_MS = 500                      # the reader's wake-up when idle (a death is seen at once: its sentinel is polled)


class EngineProcessDied(UserError):
    """The engine-core process exited while the server needed it."""


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class EngineClient:
    """Starts the engine-core process in `__init__` (blocking until it is warmed up) and talks to it."""

    def __init__(self, make_engine: Callable[..., tuple[Any, dict]], args: tuple, *,
                 startup_timeout_s: float = 1800.0) -> None:
        self._dir = tempfile.mkdtemp(prefix="codefoundry-engine-")
        self._ctx = zmq.Context()
        self._push = self._ctx.socket(zmq.PUSH)
        self._pull = self._ctx.socket(zmq.PULL)
        self._send_lock = threading.Lock()
        self._streams = StreamTable()
        self._calls: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._ids = itertools.count()
        self._call_ids = itertools.count()
        self._closing = False
        self._reader: threading.Thread | None = None
        self._engine_metrics: EngineMetrics | None = None
        self.metrics: Metrics | None = None
        self.on_death: list[Callable[[], None]] = []
        self.dead = False
        self.steps = 0
        self.stats: EngineStats | None = None
        self.core = core.start_engine_core(make_engine, args, self._dir)
        self._push.bind(self.core.input_address)
        self._pull.bind(self.core.output_address)
        try:
            self.info: dict[str, Any] = self._wait_ready(startup_timeout_s)
        except BaseException:
            self._close(kill=True)
            raise
        self.special_ids: set[int] = set(self.info["special_ids"])

    @property
    def pid(self) -> int:
        return self.core.pid

    @property
    def exitcode(self) -> int | None:
        return self.core.exitcode

    @property
    def healthy(self) -> bool:
        return not self.dead and not self._closing and self.core.is_alive()

    def _wait_ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        process = self.core
        while time.monotonic() < deadline:
            if self._pull.poll(200):
                message = core.decode(self._pull.recv())
                if message[0] == core.READY:
                    return message[1]
                raise UserError(message[1])                   # FAILED: build_engine's own error
            if not process.is_alive():
                raise EngineProcessDied(
                    f"the engine process exited during start-up ({describe_exit(process.exitcode)})")
        raise EngineProcessDied(f"the engine process was not ready after {timeout_s:.0f} s")

    def start(self, metrics: Metrics) -> None:
        """Begin reading the core's reports into `metrics` and the requests' streams."""
        self.metrics = metrics
        self._reader = threading.Thread(target=self._read, name="codefoundry-engine-reader", daemon=True)
        # the core sends a first report once it gets any command: ask for its stats to seed the gauges
        self._send([[core.CALL, -1, "stats", []]])
        self._reader.start()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Tell the core to shut down (in-flight requests are dropped: drain first), wait for it; its exit code."""
        if not self._closing:
            self._closing = True
            if self.core.is_alive():
                self._send([[core.SHUTDOWN]])
            self.core.join(timeout_s)
            self._close(kill=True)
        return self.exitcode

    def _close(self, kill: bool) -> None:
        process = self.core
        if kill and process.is_alive():
            process.kill()
            process.join(10)
        process.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=10)
        self._push.close(linger=0)
        self._pull.close(linger=0)
        self._ctx.term()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- the event loop's side ----

    def submit(self, valid: ValidRequest, times: RequestTimes) -> RequestHandle:
        stream = RequestStream(asyncio.get_running_loop(), asyncio.Queue(), times)
        rid = next(self._ids)
        if not self.healthy:
            stream.queue.put_nowait(self._dead_error())
        else:
            self._streams.add(rid, stream)
            self._send([[core.ADD, rid, valid.input_ids, _encodable(valid.params), getattr(valid, "adapter_id", None)]])
        return RequestHandle(rid, self.abort, stream)

    def abort(self, request_id: int) -> None:
        if self._streams.pop(request_id) is not None and self.healthy:
            self._send([[core.ABORT, request_id]])

    async def call(self, method: str, *args: Any) -> Any:
        """Run `Engine.<method>(*args)` in the engine process between two steps (or read that attribute); its
        result, or its exception raised here. Arguments and result must be plain data (msgpack)."""
        if not self.healthy:
            raise self._dead_error()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        call_id = next(self._call_ids)
        self._calls[call_id] = (loop, future)
        try:
            self._send([[core.CALL, call_id, method, list(args)]])
        except TypeError as e:                     # an argument msgpack cannot carry
            self._calls.pop(call_id, None)
            raise TypeError(f"engine call {method}: {e}") from None
        return await future

    def _send(self, commands: list) -> None:
        frame = core.encode(commands)
        with self._send_lock:
            self._push.send(frame)

    def _dead_error(self) -> ServeError:
        return ServeError("engine_unavailable", f"the engine process is not running "
                                                f"({describe_exit(self.core.exitcode)})")

    # ---- the reader thread ----

    def _read(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pull, zmq.POLLIN)
        poller.register(self.core.sentinel, zmq.POLLIN)
        while True:
            events = dict(poller.poll(POLL_MS))
            if self._pull in events:
                while True:
                    try:
                        frame = self._pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self._handle(core.decode(frame))
                    except Exception:
                        log.exception("bad report from the engine process")
            elif self._closing:
                return
            elif not self.core.is_alive():
                self._died()
                return

    def _died(self) -> None:
        self.dead = True
        error = self._dead_error()
        log.error("%s; failing %d in-flight request(s)", error.message, len(self._streams))
        self._streams.fail_all(error)
        for loop, future in self._calls.values():
            _settle_threadsafe(loop, future, None, error)
        self._calls.clear()
        for callback in self.on_death:
            callback()

    def _handle(self, message: list) -> None:
        if message[0] != core.STEP:
            return
        report = core.StepReport.from_wire(message)
        m = self.metrics
        assert m is not None
        if self._engine_metrics is None:
            self._engine_metrics = EngineMetrics(m, report.stats)
        for call_id, ok, value in report.results:
            entry = self._calls.pop(call_id, None)
            if entry is not None:
                error = None if ok else core.rebuild_exception(*value)
                _settle_threadsafe(*entry, value if ok else None, error)
        for _ in report.aborted:
            m.requests_aborted.inc()
        items: list[tuple[int, StepOutput | ServeError]] = [
            (rid, ServeError(kind, message)) for rid, kind, message in report.errors]
        if report.stepped:
            self.steps += 1
            if any(kind == "generation" for _, kind, _ in report.errors):
                self._engine_metrics.step_failed()
            started = [s for rid in report.admitted_ids
                       if (s := self._streams.get(rid)) is not None and s.times.scheduled == 0]
            self._engine_metrics.step(report.step_seconds, report.num_scheduled, prefill=bool(started))
            for s in started:
                s.times.scheduled = report.step_start_ns
        now = time.time_ns()
        for rid, token_w, text, completion_w in report.outputs:
            stream = self._streams.get(rid)
            if stream is None:
                continue
            token = core.token_from_wire(token_w)
            stream.tokens.append(token)
            if stream.times.first_token == 0:
                stream.times.first_token = now
            completion = None
            if completion_w is not None:
                completion = core.completion_from_wire(completion_w, stream.tokens)
                stream.times.done = now
            items.append((rid, StepOutput(rid, token, text, completion)))
        orphans = self._streams.deliver(items)     # their event loop is closed: nobody reads them
        if orphans:
            self._send([[core.ABORT, rid] for rid in orphans])
        self.stats = report.stats
        self._engine_metrics.gauges(report.stats)


def _settle_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future, value: Any,
                       error: BaseException | None) -> None:
    def settle() -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(value)
    with contextlib.suppress(RuntimeError):    # that event loop is closed: nobody awaits the call
        loop.call_soon_threadsafe(settle)


TOP_K_CAP = 2**31 - 1      # more than any vocabulary: the same as no cut, and msgpack carries it (10**30 it cannot)


def _encodable(params: SamplingParams) -> SamplingParams:
    """`params` with a legal but huge top_k capped, so it crosses the process boundary."""
    if params.top_k is not None and params.top_k > TOP_K_CAP:
        return dataclasses.replace(params, top_k=TOP_K_CAP)
    return params
