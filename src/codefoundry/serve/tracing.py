"""OpenTelemetry spans per request (validation, queue, prefill, decode), as TGI's router emits.

Spans are recorded with their measured start/end times once a request is done. They are
exported over OTLP/HTTP only when an endpoint is given; otherwise the tracer is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


@dataclass
class RequestTimes:
    """Wall-clock nanoseconds (time.time_ns) of one request's phases."""

    start: int
    validated: int = 0
    scheduled: int = 0                 # first engine step that computed any of its tokens
    first_token: int = 0
    done: int = 0
    attributes: dict[str, object] = field(default_factory=dict)


def make_tracer_provider(otlp_endpoint: str | None, extra: SpanProcessor | None = None) -> TracerProvider | None:
    """A provider exporting to `otlp_endpoint` (+ `extra`, for tests); None when there is nothing to export."""
    if otlp_endpoint is None and extra is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "codefoundry-serve"}))
    if otlp_endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = otlp_endpoint.rstrip("/")
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=url if url.endswith("/v1/traces") else url + "/v1/traces")))
    if extra is not None:
        provider.add_span_processor(extra)
    return provider


def record_request_spans(provider: TracerProvider | None, route: str, t: RequestTimes) -> None:
    """One `generate` span with children validation, queue, prefill and decode."""
    if provider is None:
        return
    tracer = provider.get_tracer("codefoundry.serve")
    root = tracer.start_span(route, start_time=t.start, attributes=t.attributes)
    ctx = trace.set_span_in_context(root)
    end = t.done or t.validated or t.start
    phases = [("validation", t.start, t.validated), ("queue", t.validated, t.scheduled),
              ("prefill", t.scheduled, t.first_token), ("decode", t.first_token, t.done)]
    for name, a, b in phases:
        if a and b:
            tracer.start_span(name, context=ctx, start_time=a).end(end_time=max(a, b))
    root.end(end_time=max(end, t.start))
