"""vLLM's Prometheus metrics, next to the project's own on the same /metrics: the names, types, buckets and
labels (``model_name``: the first served name; ``engine``: "0") of vLLM's V1 ``PrometheusStatLogger``, so
vLLM's Grafana dashboards and alerts work against `serve` unchanged. What each one measures here:
latencies a client sees (TTFT, end to end) on the wall clock from the request's arrival; the gap before
each streamed chunk after the first (one per engine step, as vLLM observes it) at the emulated pace;
queue, prefill and decode phases from the simulation's stamps (÷ speed). Gauges and the prefix-cache
counters are read from the engine at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloudmatrix.emulator.engine import RealtimeEngine, Stream

# vLLM's buckets (vllm/v1/metrics/loggers.py)
TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_GAP_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip
PREFILL_TOKEN_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
N_BUCKETS = (1, 2, 5, 10, 20)
FINISH_REASONS = ("stop", "length", "abort")


def one_two_five_buckets(max_value: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value`` (vLLM's token-count buckets, to the context length)."""
    out: list[int] = []
    scale = 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return tuple(out)
            out.append(m * scale)
        scale *= 10


@dataclass(frozen=True)
class EngineState:
    """What the scrape reads from the engine: requests in batches and waiting, KV use, prefix-cache tokens."""

    running: Callable[[], float]
    waiting: Callable[[], float]
    kv_usage: Callable[[], float]
    prefix_queries: Callable[[], float]
    prefix_hits: Callable[[], float]

    @classmethod
    def of(cls, engine: RealtimeEngine) -> EngineState:
        return cls(
            running=engine.running,
            waiting=engine.queue_depth,
            kv_usage=engine.kv_occupancy,
            prefix_queries=lambda: engine.prefix_cache_tokens()[0],
            prefix_hits=lambda: engine.prefix_cache_tokens()[1],
        )


@dataclass(frozen=True)
class Finished:
    """One finished sequence: wall-clock end to end, the simulated phases in wall seconds, its token counts."""

    e2e_s: float
    queue_s: float
    prefill_s: float
    decode_s: float
    prompt_tokens: int
    generated: int
    max_tokens: int
    finish_reason: str


def finished_sequence(stream: Stream, timeline: dict[str, Any], speed: float, e2e_s: float) -> Finished:
    """A finished sequence's figures: end to end on the wall clock, its phases from the simulation's stamps
    (queue: arrival to prefill start; prefill: to the first token, KV hand-off included; decode: the rest)."""

    def span(start: str, end: str) -> float:
        a, b = timeline.get(start), timeline.get(end)
        return 0.0 if a is None or b is None else max(b - a, 0.0) / speed

    return Finished(
        e2e_s=e2e_s,
        queue_s=span("arrival_s", "prefill_start_s"),
        prefill_s=span("prefill_start_s", "first_token_s"),
        decode_s=span("first_token_s", "finish_s"),
        prompt_tokens=stream.prompt_tokens,
        generated=stream.generated,
        max_tokens=stream.max_tokens,
        finish_reason=stream.finish_reason,
    )


class _Scraped(Collector):
    def __init__(self, state: EngineState, labels: tuple[str, str]) -> None:
        self.state, self.labels = state, labels

    def collect(self) -> Iterator[Metric]:
        names = ["model_name", "engine"]
        s = self.state
        for name, doc, read in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", s.running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_usage),
            ("vllm:gpu_cache_usage_perc", "KV-cache usage (vLLM's older name).", s.kv_usage),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=names)
            gauge.add_metric(self.labels, float(read()))
            yield gauge
        for name, doc, read in (
            ("vllm:prefix_cache_queries", "Prefix cache queries, in queried tokens.", s.prefix_queries),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in cached tokens.", s.prefix_hits),
        ):
            counter = CounterMetricFamily(name, doc, labels=names)
            counter.add_metric(self.labels, float(read()))
            yield counter


class VllmMetrics:
    def __init__(self, registry: CollectorRegistry, model_name: str, max_model_len: int, state: EngineState) -> None:
        r, names = registry, ["model_name", "engine"]
        self.labels = (model_name, "0")
        registry.register(_Scraped(state, self.labels))

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=r)

        tokens = one_two_five_buckets(max_model_len)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.success = Counter(
            "vllm:request_success", "Count of successfully processed requests.", [*names, "finished_reason"], registry=r
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS_S
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", TOKEN_GAP_BUCKETS_S
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", TOKEN_GAP_BUCKETS_S
        )
        latency = REQUEST_LATENCY_BUCKETS_S
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", latency
        )
        self.queue = histogram(
            "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", latency
        )
        self.inference = histogram(
            "vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", latency
        )
        self.prefill = histogram(
            "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", latency
        )
        self.decode = histogram(
            "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", latency
        )
        self.prefill_per_token = histogram(
            "vllm:time_per_prefill_token_request_seconds",
            "Time spent per token during prefill phase in seconds",
            PREFILL_TOKEN_BUCKETS_S,
        )
        self.prompt_len = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self.generation_len = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens
        )
        self.max_generation = histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            tokens,
        )
        self.max_tokens = histogram(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens
        )
        self.n = histogram("vllm:request_params_n", "Histogram of the n request parameter.", N_BUCKETS)
        for reason in FINISH_REASONS:  # every series exists from the start, as vLLM's do
            self.success.labels(*self.labels, reason)

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.labels(*self.labels).observe(seconds)

    def observe_gap(self, seconds: float) -> None:
        """A chunk that came ``seconds`` after the one before: one observation per engine step and sequence, as
        vLLM's V1 logger makes (MTP's tokens of one step arrive in one chunk: one gap, not one per token)."""
        self.itl.labels(*self.labels).observe(seconds)
        self.tpot.labels(*self.labels).observe(seconds)

    def count_tokens(self, prompt: int, generated: int) -> None:
        if prompt:
            self.prompt_tokens.labels(*self.labels).inc(prompt)
        if generated:
            self.generation_tokens.labels(*self.labels).inc(generated)

    def observe_request(self, n: int, max_tokens: int) -> None:
        self.n.labels(*self.labels).observe(n)
        self.max_tokens.labels(*self.labels).observe(max_tokens)

    def observe_finished(self, done: Finished) -> None:
        lab = self.labels
        self.success.labels(*lab, done.finish_reason).inc()
        self.e2e.labels(*lab).observe(done.e2e_s)
        self.queue.labels(*lab).observe(done.queue_s)
        self.prefill.labels(*lab).observe(done.prefill_s)
        self.decode.labels(*lab).observe(done.decode_s)
        self.inference.labels(*lab).observe(done.prefill_s + done.decode_s)
        if done.prompt_tokens > 0:
            self.prefill_per_token.labels(*lab).observe(done.prefill_s / done.prompt_tokens)
        self.prompt_len.labels(*lab).observe(done.prompt_tokens)
        self.generation_len.labels(*lab).observe(done.generated)
        self.max_generation.labels(*lab).observe(done.generated)
