"""Prometheus metrics of the emulator (text exposition format at /metrics), and the same observations over
the last minute for the live dashboard (``RollingWindow``: one-second slots of the same histogram buckets)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
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


PERCENTILES = (50, 90, 99)


class RollingWindow:
    """The last ``seconds`` of TTFT and TPOT observations and of streamed tokens, in one-second slots of
    the /metrics histogram buckets; percentiles interpolate within a bucket as Prometheus's
    histogram_quantile does. Wall clock: the dashboard shows what clients see now."""

    def __init__(self, seconds: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.bounds = np.array(LATENCY_BUCKETS_S)
        width = len(self.bounds) + 1  # the last slot: above the largest bound
        self.ttft = np.zeros((seconds, width))
        self.tpot = np.zeros((seconds, width))
        self.tokens = np.zeros(seconds)
        self.stamp = np.full(seconds, -1, dtype=np.int64)

    def _slot(self) -> int:
        now = int(self.clock())
        i = now % self.seconds
        if self.stamp[i] != now:
            self.ttft[i] = self.tpot[i] = 0.0
            self.tokens[i] = 0.0
            self.stamp[i] = now
        return i

    def observe(self, which: str, value: float, count: int = 1) -> None:
        getattr(self, which)[self._slot(), int(np.searchsorted(self.bounds, value))] += count

    def add_tokens(self, n: int) -> None:
        self.tokens[self._slot()] += n

    def _live(self) -> np.ndarray:
        return self.stamp > int(self.clock()) - self.seconds

    def percentiles_ms(self, which: str) -> dict[str, float | None]:
        counts = getattr(self, which)[self._live()].sum(axis=0)
        total = counts.sum()
        out: dict[str, float | None] = {}
        for p in PERCENTILES:
            if total == 0:
                out[f"p{p}"] = None
                continue
            rank = total * p / 100
            cum = np.cumsum(counts)
            b = int(np.searchsorted(cum, rank))
            lo = 0.0 if b == 0 else float(self.bounds[min(b, len(self.bounds)) - 1])
            hi = float(self.bounds[b]) if b < len(self.bounds) else lo
            before = 0.0 if b == 0 else float(cum[b - 1])
            share = (rank - before) / counts[b] if counts[b] else 0.0
            out[f"p{p}"] = (lo + (hi - lo) * share) * 1e3
        return out

    def tokens_per_s(self) -> float:
        """Tokens streamed per second over the seconds of the last minute in which any were streamed (the
        second under way left out, as it is not over): what clients pulled while pulling, not diluted by idle
        time."""
        now = int(self.clock())
        done = self._live() & (self.stamp < now) & (self.tokens > 0)
        return float(self.tokens[done].sum() / done.sum()) if done.any() else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "window_s": self.seconds,
            "tokens_per_s": self.tokens_per_s(),
            "ttft_ms": self.percentiles_ms("ttft"),
            "tpot_ms": self.percentiles_ms("tpot"),
        }


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
        self.window = RollingWindow()
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

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)
        self.window.observe("ttft", seconds)

    def observe_tpot(self, seconds: float, tokens: int) -> None:
        """``tokens`` tokens that each took ``seconds`` (token-weighted, as /metrics counts them)."""
        for _ in range(tokens):
            self.tpot.observe(seconds)
        self.window.observe("tpot", seconds, tokens)

    def count_tokens(self, tokens: int) -> None:
        self.generated_tokens.inc(tokens)
        self.window.add_tokens(tokens)
