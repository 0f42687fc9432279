"""`simulate --replications N`: one scenario run under N seeds (the scenario's seed, seed + 1, ...), in local
processes or on Ray, and the spread of its figures. Each replication is the same pure function of the
scenario and its seed, and results are put back in seed order, so the summary is identical whatever runs
them (a process pool, Ray, or this process)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from cloudmatrix.errors import ConfigError
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import Scenario

MAX_REPLICATIONS = 10_000
Executor = Callable[[Callable[[list[int]], list[dict[str, Any]]], Sequence[int]], list[dict[str, Any]]]

# the figures whose spread is reported: (name, path in simulate's result)
FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ttft_p50_ms", ("ttft_ms", "p50")),
    ("ttft_p99_ms", ("ttft_ms", "p99")),
    ("tpot_p50_ms", ("tpot_ms", "p50")),
    ("tpot_p99_ms", ("tpot_ms", "p99")),
    ("decode_tok_s_per_chip", ("throughput_per_chip_tok_s", "decode")),
    ("slo_attainment", ("slo_attainment",)),
    ("goodput_req_s", ("goodput_req_s",)),
    ("availability", ("faults", "availability")),
    ("faults", ("faults", "events")),
    ("requests_cut", ("faults", "requests", "cut")),
    ("requests_failed", ("faults", "requests", "failed")),
)


class SeedRuns:
    """A picklable ``seeds -> figures`` function bound to a scenario (what a worker process or Ray task runs)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def __call__(self, seeds: list[int]) -> list[dict[str, Any]]:
        return [figures(simulate(self.scenario.model_copy(update={"seed": s})).to_dict()) for s in seeds]


def figures(d: dict[str, Any]) -> dict[str, Any]:
    """The replicated figures of one run (absent ones, e.g. availability without faults, left out)."""
    out: dict[str, Any] = {}
    for name, path in FIGURES:
        value: Any = d
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            value = len(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def seeds_of(scenario: Scenario, n: int) -> list[int]:
    if not 1 <= n <= MAX_REPLICATIONS:
        raise ConfigError(f"--replications: got {n}; expected 1 to {MAX_REPLICATIONS}")
    if scenario.seed + n - 1 > 2**63 - 1:
        raise ConfigError(f"--replications: seeds {scenario.seed} + {n} pass 2**63 - 1; lower seed")
    return list(range(scenario.seed, scenario.seed + n))


def in_processes(jobs: int | None) -> Executor:
    """Seeds over ``jobs`` local processes (default: every core), in order; one job runs here."""

    def run(fn: Callable[[list[int]], list[dict[str, Any]]], seeds: Sequence[int]) -> list[dict[str, Any]]:
        workers = max(min(jobs or os.cpu_count() or 1, len(seeds)), 1)
        if workers == 1:
            return fn(list(seeds))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return [r for part in pool.map(fn, [[s] for s in seeds]) for r in part]

    return run


def replicate(scenario: Scenario, n: int, executor: Executor) -> dict[str, Any]:
    seeds = seeds_of(scenario, n)
    runs = executor(SeedRuns(scenario), seeds)
    return {"replications": n, "seeds": [seeds[0], seeds[-1]], "runs": runs, "summary": spread(runs)}


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and percentiles of each figure over the runs that have it."""
    out: dict[str, dict[str, float]] = {}
    for name, _ in FIGURES:
        v = np.array([r[name] for r in runs if name in r], dtype=float)
        if v.size == 0:
            continue
        out[name] = {
            "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()),
            "p5": float(np.percentile(v, 5)),
            "p50": float(np.percentile(v, 50)),
            "p95": float(np.percentile(v, 95)),
            "max": float(v.max()),
        }
    return out
