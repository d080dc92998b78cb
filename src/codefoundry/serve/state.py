"""`ServerState`, what every route reads, and the dependencies that hand it (and the API-key check) to routes."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from opentelemetry.sdk.trace import TracerProvider

from codefoundry.serve.config import ServeConfig
from codefoundry.serve.errors import OVERLOADED, ServeError
from codefoundry.serve.metrics import Metrics
from codefoundry.serve.request_streams import RequestHandle
from codefoundry.serve.schemas import Info
from codefoundry.serve.tracing import RequestTimes
from codefoundry.serve.validation import Limits, Validator, ValidRequest


class EngineBackend(Protocol):
    """What routes use of the engine: `engine_loop.EngineLoop` (a thread here) or `engine_client.EngineClient`
    (the engine in its own process). A route calls an engine method with `await state.engine_loop.call(name, …)`."""

    special_ids: set[int]
    steps: int

    @property
    def healthy(self) -> bool: ...
    def start(self, metrics: Metrics) -> None: ...
    def submit(self, valid: ValidRequest, times: RequestTimes) -> RequestHandle: ...
    def abort(self, request_id: int) -> None: ...
    async def call(self, method: str, *args: Any) -> Any: ...
    def stop(self) -> Any: ...


@dataclass
class ServerState:
    """The server's config and what warmup built from it; made (and warmed up) by `server.build_state`."""

    config: ServeConfig
    tokenizer: Any
    validator: Validator
    engine_loop: EngineBackend
    metrics: Metrics
    info: Info
    tracer_provider: TracerProvider | None = None
    ready: bool = False
    draining: bool = False
    in_flight: int = 0

    @property
    def healthy(self) -> bool:
        return self.ready and not self.draining and self.engine_loop.healthy

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def limits(self) -> Limits:
        return self.validator.limits

    @property
    def compute_type(self) -> str:
        return "gpu+optimized" if self.info.model_device_type == "cuda" else "cpu+optimized"

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Count a request in flight; 429 beyond max_concurrent_requests, 503 while shutting down."""
        self.metrics.request_count.inc()
        if self.draining:
            raise ServeError("shutting_down", "the server is shutting down")
        if not self.engine_loop.healthy:
            raise ServeError("engine_unavailable", "the engine is not running")
        if self.in_flight >= self.config.max_concurrent_requests:
            self.metrics.request_failure.labels(err="overloaded").inc()
            raise ServeError("overloaded", OVERLOADED)
        self.in_flight += 1
        try:
            yield
        except ServeError as e:
            self.metrics.request_failure.labels(err=e.error_type).inc()
            raise
        else:
            self.metrics.request_success.inc()
        finally:
            self.in_flight -= 1


def server_state(request: Request) -> ServerState:
    return request.app.state.serve


# async, so FastAPI calls them on the event loop instead of a worker thread
async def _state(request: Request) -> ServerState:
    return server_state(request)


State = Annotated[ServerState, Depends(_state)]


class Unauthorized(Exception):
    """Missing or wrong Bearer key: 401 (TGI), with a JSON error body."""


def key_matches(authorization: str, api_key: str) -> bool:
    """`Bearer KEY`: the scheme word in any case (RFC 7235), the key exactly, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    # bytes, because compare_digest refuses str with non-ASCII characters (a header can carry any latin-1)
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())


async def require_api_key(request: Request) -> None:
    key = server_state(request).config.api_key
    if key is not None and not key_matches(request.headers.get("authorization", ""), key):
        raise Unauthorized()
