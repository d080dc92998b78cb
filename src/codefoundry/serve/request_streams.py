"""The HTTP side of in-flight requests: one asyncio queue per request, filled from the thread that reads the engine.

`StreamTable` maps request ids to `RequestStream`s and delivers a step's outputs with one
`call_soon_threadsafe` per event loop and step (one wake-up for the whole batch, not one per
token). A route iterates its `RequestHandle` for `StepOutput`s until one carries a completion (a
completion with an `error`, a grammar that broke, arrives as a `ServeError`);
a handle left early (the client went away) aborts its request, which frees its KV blocks.
Both engine back ends (`engine_loop`: a thread in this process; `engine_client`: the engine
in its own process) use these.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from codefoundry.generate import GeneratedToken, StepOutput
from codefoundry.serve.errors import ServeError
from codefoundry.serve.tracing import RequestTimes


@dataclass
class RequestStream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    times: RequestTimes
    tokens: list[GeneratedToken] = field(default_factory=list)   # what arrived so far (the process client's)


@dataclass
class RequestHandle:
    """The caller's side of one request: iterate it for `StepOutput`s until one carries a completion."""

    request_id: int
    abort: Callable[[int], None]
    stream: RequestStream
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
                self.abort(self.request_id)


Item = StepOutput | ServeError


class StreamTable:
    """In-flight requests by id; thread-safe, so the engine's reader can deliver while routes add and abort."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, RequestStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, rid: int) -> bool:
        return rid in self._streams

    def get(self, rid: int) -> RequestStream | None:
        return self._streams.get(rid)

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._streams)

    def add(self, rid: int, stream: RequestStream) -> None:
        with self._lock:
            self._streams[rid] = stream

    def pop(self, rid: int) -> RequestStream | None:
        with self._lock:
            return self._streams.pop(rid, None)

    def deliver(self, items: list[tuple[int, Item]]) -> list[int]:
        """Hand items to their requests' loops (a completion or error ends a request); returns the ids whose loop
        is closed (nobody listens: the caller aborts them)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[int, asyncio.Queue, Item]]] = {}
        with self._lock:
            for rid, item in items:
                stream = self._streams.get(rid)
                if stream is None:
                    continue
                if isinstance(item, StepOutput) and item.completion is not None and item.completion.error:
                    item = ServeError("generation", item.completion.error)   # a broken grammar: not an output
                if isinstance(item, ServeError) or item.completion is not None:
                    del self._streams[rid]
                by_loop.setdefault(stream.loop, []).append((rid, stream.queue, item))
        orphans = []
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:           # the requests' event loop is closed: nobody is listening
                orphans.extend(rid for rid, _, _ in batch)
        return orphans

    def fail_all(self, error: ServeError) -> None:
        self.deliver([(rid, error) for rid in self.ids()])


def _put_all(batch: list[tuple[int, asyncio.Queue, Item]]) -> None:
    for _, queue, item in batch:
        queue.put_nowait(item)
