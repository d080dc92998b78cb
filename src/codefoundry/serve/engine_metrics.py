"""The engine's share of `/metrics`: step counters and timings, and gauges from `EngineStats`.

Both engine back ends feed it the same facts (what a step did, the engine's stats after it),
read in this process or carried over from the engine process in each step report.
"""

from __future__ import annotations

from codefoundry.generate import EngineStats
from codefoundry.serve.metrics import Metrics


class EngineMetrics:
    """Writes engine facts into `Metrics`; the prefix-cache counters count from the first stats seen (after
    warmup, whose lookups are not the clients')."""

    def __init__(self, metrics: Metrics, initial: EngineStats) -> None:
        self.metrics = metrics
        self._prefix_start = (initial.prefix_cache_queries, initial.prefix_cache_hits)
        self._prefix_counted = (0, 0)      # (queries, hits) since start already added to the counters

    def step(self, seconds: float, num_scheduled: int, prefill: bool) -> None:
        if not num_scheduled:
            return
        m, method = self.metrics, "prefill" if prefill else "decode"
        m.batch_inference_count.labels(method=method).inc()
        m.batch_inference_success.labels(method=method).inc()
        m.batch_forward_duration.labels(method=method).observe(seconds)
        m.batch_next_size.observe(num_scheduled)

    def step_failed(self) -> None:
        self.metrics.batch_inference_failure.labels(method="decode").inc()

    def gauges(self, s: EngineStats) -> None:
        m = self.metrics
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
