"""Prometheus metrics with TGI's `tgi_*` names and types, plus a time-to-first-token histogram TGI lacks.

Each server has its own registry (several servers can live in one test process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

DURATION_BUCKETS = [0.0001 * 1.5**i for i in range(1, 36)]   # TGI: 35 geometric buckets, 0.00015 s to ~146 s


def _linear(top: int, n: int = 100) -> list[float]:
    step = max(top / n, 1.0)
    return [step * (i + 1) for i in range(n)]


class Metrics:
    """The server's metrics; token-count buckets follow TGI (100 linear buckets up to the limit)."""

    def __init__(self, max_input_tokens: int, max_total_tokens: int) -> None:
        r = self.registry = CollectorRegistry()
        self.request_count = Counter("tgi_request_count", "Requests received", registry=r)
        self.request_success = Counter("tgi_request_success", "Requests that succeeded", registry=r)
        self.request_failure = Counter("tgi_request_failure", "Requests that failed", ["err"], registry=r)
        self.queue_size = Gauge("tgi_queue_size", "Requests waiting for the engine", registry=r)
        self.batch_current_size = Gauge("tgi_batch_current_size", "Sequences in the running batch", registry=r)
        self.batch_current_max_tokens = Gauge("tgi_batch_current_max_tokens", "KV tokens held by the batch",
                                              registry=r)
        self.batch_max_total_tokens = Gauge("tgi_batch_max_total_tokens", "KV pool size in tokens (after warmup)",
                                            registry=r)
        self.batch_inference_count = Counter("tgi_batch_inference_count", "Engine steps", ["method"], registry=r)
        self.batch_inference_success = Counter("tgi_batch_inference_success", "Engine steps that succeeded",
                                               ["method"], registry=r)
        self.batch_inference_failure = Counter("tgi_batch_inference_failure", "Engine steps that failed",
                                               ["method"], registry=r)
        self.batch_forward_duration = Histogram("tgi_batch_forward_duration", "Engine step seconds", ["method"],
                                                buckets=DURATION_BUCKETS, registry=r)
        self.batch_next_size = Histogram("tgi_batch_next_size", "Sequences per step",
                                         buckets=[2**i for i in range(11)], registry=r)
        hist = {
            "request_duration": "End-to-end request seconds",
            "request_validation_duration": "Validation seconds",
            "request_queue_duration": "Seconds waiting before the first scheduled step",
            "request_inference_duration": "Seconds from first scheduled step to the last token",
            "request_mean_time_per_token_duration": "Mean seconds per generated token",
            "request_time_to_first_token": "Seconds from arrival to the first generated token (not in TGI)",
        }
        for name, doc in hist.items():
            setattr(self, name, Histogram(f"tgi_{name}", doc, buckets=DURATION_BUCKETS, registry=r))
        self.request_input_length = Histogram("tgi_request_input_length", "Input tokens",
                                              buckets=_linear(max_input_tokens), registry=r)
        self.request_generated_tokens = Histogram("tgi_request_generated_tokens", "Generated tokens",
                                                  buckets=_linear(max_total_tokens), registry=r)
        self.request_max_new_tokens = Histogram("tgi_request_max_new_tokens", "max_new_tokens asked",
                                                buckets=_linear(max_total_tokens), registry=r)
        self.kv_blocks_total = Gauge("codefoundry_kv_blocks_total", "KV cache blocks in the pool", registry=r)
        self.kv_blocks_used = Gauge("codefoundry_kv_blocks_used", "KV cache blocks held by sequences", registry=r)
        self.requests_aborted = Counter("codefoundry_requests_aborted", "Requests dropped (client gone)",
                                        registry=r)
        self.preemptions = Gauge("codefoundry_preemptions", "Sequences preempted since start", registry=r)
        self.prefix_cache_queries = Counter("codefoundry_prefix_cache_queries",
                                            "Prompt tokens looked up in the prefix cache at admission", registry=r)
        self.prefix_cache_hits = Counter("codefoundry_prefix_cache_hits",
                                         "Prompt tokens found in the prefix cache (not recomputed)", registry=r)
        self.prefix_cache_hit_ratio = Gauge("codefoundry_prefix_cache_hit_ratio",
                                            "prefix_cache_hits / prefix_cache_queries since start", registry=r)
        self.kv_blocks_cached = Gauge("codefoundry_kv_blocks_cached",
                                      "KV cache blocks findable by the prefix cache (held or free)", registry=r)

    def render(self) -> bytes:
        """Prometheus text with TGI's exact names: counters without prometheus_client's `_total`, no `_created`."""
        lines = []
        for family in self.registry.collect():
            kind = family.type
            lines.append(f"# HELP {family.name} {family.documentation}")
            lines.append(f"# TYPE {family.name} {kind}")
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                name = family.name if kind == "counter" and s.name == family.name + "_total" else s.name
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
                lines.append(f"{name}{{{labels}}} {_value(s.value)}" if labels else f"{name} {_value(s.value)}")
        return ("\n".join(lines) + "\n").encode()


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(v: float) -> str:
    return floatToGoString(v)
