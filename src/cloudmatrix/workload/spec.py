"""Workload specifications (validated, so scenario errors name the field) and their seeded generation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from cloudmatrix.catalog.strict import StrictModel
from cloudmatrix.inputs import MAX_REQUESTS, MAX_TOKENS
from cloudmatrix.workload.rng import stream
from cloudmatrix.workload.trace import read_trace


class _Spec(StrictModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class LengthSpec(_Spec):
    """Token lengths: fixed, normal (mean, std), lognormal (mean, std of the lengths), or uniform [low, high]."""

    kind: Literal["fixed", "normal", "lognormal", "uniform"] = "fixed"
    value: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    mean: float | None = Field(default=None, gt=0, le=MAX_TOKENS)
    std: float | None = Field(default=None, ge=0, le=MAX_TOKENS)
    low: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    high: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max: int | None = Field(default=None, ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _check(self) -> LengthSpec:
        need = {
            "fixed": ("value",),
            "normal": ("mean", "std"),
            "lognormal": ("mean", "std"),
            "uniform": ("low", "high"),
        }[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{self.kind} lengths need field '{missing[0]}'")
        if self.kind == "uniform" and self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"uniform low {self.low} exceeds high {self.high}")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            out = np.full(n, float(self.value or 1))
        elif self.kind == "normal":
            out = rng.normal(float(self.mean or 1), float(self.std or 0), n)
        elif self.kind == "lognormal":
            mean, std = float(self.mean or 1), float(self.std or 0)
            sigma2 = np.log1p((std / mean) ** 2)
            out = rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), n)
        else:
            out = rng.integers(self.low or 1, (self.high or 1) + 1, n).astype(float)
        out = np.maximum(np.rint(out), 1)
        return np.minimum(out, self.max).astype(np.int64) if self.max else out.astype(np.int64)

    @property
    def typical(self) -> int:
        """A representative length (for sizing batches and default rates)."""
        if self.kind == "fixed":
            return int(self.value or 1)
        if self.kind == "uniform":
            return int(((self.low or 1) + (self.high or 1)) / 2)
        return int(self.mean or 1)


class ArrivalSpec(_Spec):
    """Open-loop Poisson or gamma (bursty, coefficient of variation ``cv``) arrivals at ``rate_per_s``, or a
    closed loop of ``concurrency`` clients that each send the next request when the last one finishes. An open
    loop with ``concurrency`` too is capped (a benchmark's ``--request-rate`` with ``--max-concurrency``): a
    request due while that many are in flight waits at the client and is sent when one finishes; its TTFT
    counts from the send, as ``bench_serving`` times it."""

    kind: Literal["poisson", "gamma", "closed"] = "poisson"
    rate_per_s: float | None = Field(default=None, gt=0, le=1e9)
    cv: float = Field(default=1.0, gt=0, le=100)
    concurrency: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)

    @model_validator(mode="after")
    def _check(self) -> ArrivalSpec:
        if self.kind == "closed" and self.concurrency is None:
            raise ValueError("closed-loop arrivals need field 'concurrency'")
        if self.kind != "closed" and self.rate_per_s is None:
            raise ValueError(f"{self.kind} arrivals need field 'rate_per_s'")
        return self

    def times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Arrival times (s) of ``n`` open-loop requests."""
        rate = float(self.rate_per_s or 1.0)
        if self.kind == "poisson":
            gaps = rng.exponential(1.0 / rate, n)
        else:  # gamma with mean 1/rate and the given coefficient of variation
            shape = 1.0 / self.cv**2
            gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
        return np.cumsum(gaps)


# Mooncake traces hash prompts in 512-token blocks; block sizes outside 16..4096 are not KV-cache pages.
MOONCAKE_BLOCK_TOKENS = 512
MIN_BLOCK_TOKENS, MAX_BLOCK_TOKENS = 16, 4096


class ReuseSpec(_Spec):
    """Prefix reuse of generated prompts: the first floor(fraction x input_len / block_tokens) blocks of a
    request are the shared prefix of one of ``groups`` prefix groups (uniform, seeded); its other blocks are
    its own. P3 §5.4 (Fig. 23) sweeps the reuse rate from 12.5 % to 90 %."""

    fraction: float = Field(ge=0, le=1)
    groups: int = Field(default=16, ge=1)
    block_tokens: int = Field(default=MOONCAKE_BLOCK_TOKENS, ge=MIN_BLOCK_TOKENS, le=MAX_BLOCK_TOKENS)


class WorkloadSpec(_Spec):
    input: LengthSpec = LengthSpec(kind="fixed", value=4096)
    output: LengthSpec = LengthSpec(kind="fixed", value=256)
    arrivals: ArrivalSpec = ArrivalSpec(kind="poisson", rate_per_s=100.0)
    trace: str | None = None  # CSV/JSONL path: replaces lengths and arrivals
    time_scale: float = Field(default=1.0, gt=0, le=1e6)  # trace timestamps are multiplied by this
    # tokens per block of the trace's hash_ids (Mooncake: 512)
    trace_block_tokens: int = Field(default=MOONCAKE_BLOCK_TOKENS, ge=MIN_BLOCK_TOKENS, le=MAX_BLOCK_TOKENS)
    reuse: ReuseSpec | None = None  # synthetic prefix reuse; a trace brings its own hash_ids

    @model_validator(mode="after")
    def _check(self) -> WorkloadSpec:
        if self.trace and self.reuse:
            raise ValueError("reuse applies to generated workloads; a trace brings its own hash_ids")
        return self


@dataclass(frozen=True, kw_only=True)
class Workload:
    """Requests as arrays indexed by request id. ``arrival_s`` is None for closed-loop workloads."""

    input_len: np.ndarray
    output_len: np.ndarray
    arrival_s: np.ndarray | None
    concurrency: int | None = None  # closed loop: the clients; open loop: the cap on requests in flight
    hash_ids: list[list[int]] | None = None  # per request, its prompt's prefix-block hashes (chained)
    hash_block_tokens: int = MOONCAKE_BLOCK_TOKENS  # tokens per block of ``hash_ids``

    @property
    def num_requests(self) -> int:
        return len(self.input_len)


def generate(spec: WorkloadSpec, seed: int, num_requests: int, base_dir: Path | None = None) -> Workload:
    if spec.trace:
        path = Path(spec.trace)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        trace = read_trace(path)
        n = min(num_requests, len(trace.input_len)) if num_requests else len(trace.input_len)
        return Workload(
            input_len=trace.input_len[:n],
            output_len=trace.output_len[:n],
            arrival_s=(trace.timestamp_s[:n] - trace.timestamp_s[0]) * spec.time_scale,
            hash_ids=trace.hash_ids[:n] if trace.hash_ids else None,
            hash_block_tokens=spec.trace_block_tokens,
        )
    inputs = spec.input.sample(stream(seed, "input_len"), num_requests)
    outputs = spec.output.sample(stream(seed, "output_len"), num_requests)
    hashes, block = None, MOONCAKE_BLOCK_TOKENS
    if spec.reuse is not None:
        hashes, block = reuse_hash_ids(spec.reuse, inputs, stream(seed, "reuse_group")), spec.reuse.block_tokens
    closed = spec.arrivals.kind == "closed"  # a client sends its next request as its last one finishes
    times = None if closed else spec.arrivals.times(stream(seed, "arrivals"), num_requests)
    return Workload(
        input_len=inputs,
        output_len=outputs,
        arrival_s=times,
        concurrency=spec.arrivals.concurrency,
        hash_ids=hashes,
        hash_block_tokens=block,
    )


def reuse_hash_ids(reuse: ReuseSpec, input_len: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """Block hashes with a shared prefix per group, Mooncake-style: ceil(input_len / block) ids per request.
    Shared block j of group g is ``g * max_shared + j``; ids from ``groups * max_shared`` up are unique, so an
    id fixes its whole prefix, as a chained hash does."""
    block = reuse.block_tokens
    total = -(-input_len.astype(np.int64) // block)
    shared = np.floor(reuse.fraction * input_len / block).astype(np.int64)
    max_shared = int(shared.max()) if len(shared) else 0
    groups = rng.integers(0, reuse.groups, len(input_len))
    next_unique = reuse.groups * max_shared
    out = []
    for g, k, n in zip(groups.tolist(), shared.tolist(), total.tolist(), strict=True):
        base = g * max_shared
        out.append(list(range(base, base + k)) + list(range(next_unique, next_unique + n - k)))
        next_unique += n - k
    return out
