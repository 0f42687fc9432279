"""Prometheus metrics of the emulator (text exposition format at /metrics)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 1 ms to 500 ms finely (TPOT and TTFT percentiles live there), then coarser out to a minute
LATENCY_BUCKETS_S = (
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.006,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.0175,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.06,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


class Metrics:
    def __init__(
        self,
        outstanding: Callable[[], float],
        queue_depth: Callable[[], float],
        kv_occupancy: Callable[[], float],
        cache_hit_rate: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cloudmatrix_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("cloudmatrix_prompt_tokens", "Prompt tokens admitted", registry=r)
        self.generated_tokens = Counter("cloudmatrix_generated_tokens", "Tokens sent to clients", registry=r)
        self.ttft = Histogram(
            "cloudmatrix_ttft_seconds",
            "Time to first token, from the request's arrival (wall clock)",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tpot = Histogram(
            "cloudmatrix_tpot_seconds",
            "Time per output token after the first, one observation per token (the emulated pace: sim s / speed)",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        Gauge("cloudmatrix_outstanding_requests", "Requests in flight", registry=r).set_function(outstanding)
        Gauge("cloudmatrix_queue_depth", "Requests waiting for prefill or decode admission", registry=r).set_function(
            queue_depth
        )
        Gauge("cloudmatrix_kv_occupancy_ratio", "Decode KV blocks in use / capacity", registry=r).set_function(
            kv_occupancy
        )
        Gauge(
            "cloudmatrix_prefix_cache_hit_ratio", "Prompt tokens served from the EMS context cache", registry=r
        ).set_function(cache_hit_rate)
