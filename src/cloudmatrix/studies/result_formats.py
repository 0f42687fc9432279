"""A simulation's result in the JSON a serving benchmark writes, so a twin run and a real run diff key by key
and scripts written for the benchmark read either: ``vllm`` (``vllm bench serve --save-result``, vLLM 0.10:
flat ``mean_/median_/std_/p99_`` keys for TTFT, TPOT, ITL and E2EL, per-request lists left out as vLLM leaves
them out without ``--save-detailed``) and ``sglang`` (``python -m sglang.bench_serving``'s JSONL line: the same
statistics with ``p90_`` too and ``e2e_latency``). Times are simulated seconds, reported in ms.

Definitions follow the benchmarks: TTFT is first token minus arrival; TPOT is, per request with more than one
output token, (end to end - TTFT) / (output tokens - 1); E2EL is finish minus arrival. ITL is one gap per
streamed chunk: every decode step releases one chunk to each sequence it runs (MTP's accepted tokens come in
that chunk), so the run's ITL distribution is the decode steps' durations, each counted once per sequence it
served (the first gap of a request, from its first token to its first decode step, counts as a full step)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudmatrix.sim.metrics import SimResult
from cloudmatrix.sim.scenario import Scenario

FORMATS = ("vllm", "sglang")
MS = 1e3


def _stats(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Mean, median, (population) std and the 90th / 99th percentiles, in ms; NaN when empty."""
    if values.size == 0:
        return {k: float("nan") for k in ("mean", "median", "std", "p90", "p99")}
    if weights is None:
        weights = np.ones_like(values)
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order].astype(float)
    mean = float(np.sum(v * w) / w.sum())
    std = float(np.sqrt(np.sum(w * (v - mean) ** 2) / w.sum()))
    if np.all(w == 1):  # unweighted: numpy's linear interpolation, as both benchmarks use

        def pct(p: float) -> float:
            return float(np.percentile(v, p))

    else:  # one observation per unit of weight: the value at that rank

        def pct(p: float) -> float:
            cum = np.cumsum(w)
            return float(v[min(int(np.searchsorted(cum, p / 100 * cum[-1])), len(v) - 1)])

    return {"mean": mean * MS, "median": pct(50) * MS, "std": std * MS, "p90": pct(90) * MS, "p99": pct(99) * MS}


def _per_request(result: SimResult) -> dict[str, np.ndarray]:
    t, done = result.table, result.done_ids()
    out_len = t.output_len[done]
    e2e = t.finish_s[done] - t.arrival_s[done]
    ttft = t.first_token_s[done] - t.arrival_s[done]
    many = out_len > 1
    return {
        "input": t.input_len[done],
        "output": out_len,
        "arrival": t.arrival_s[done],
        "finish": t.finish_s[done],
        "ttft": ttft,
        "tpot": (e2e[many] - ttft[many]) / (out_len[many] - 1),
        "e2e": e2e,
    }


def _steps(result: SimResult) -> np.ndarray:
    """Decode steps as rows (instance, start, duration, sequences, tokens, KV occupancy)."""
    steps = result.recorder.decode_steps
    return np.array(steps, dtype=float) if steps else np.zeros((0, 6))


def _peaks(r: dict[str, np.ndarray], steps: np.ndarray) -> tuple[float, int]:
    """The most output tokens released in one second, and the most requests in flight at once."""
    if len(steps):
        seconds = np.floor(steps[:, 1] + steps[:, 2]).astype(np.int64)
        per_second = np.bincount(seconds - seconds.min(), weights=steps[:, 4])
        peak_tokens = float(per_second.max())
    else:
        peak_tokens = 0.0
    events = np.concatenate(
        [
            np.stack([r["arrival"], np.ones_like(r["arrival"])], 1),
            np.stack([r["finish"], -np.ones_like(r["finish"])], 1),
        ]
    )
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # a finish before an arrival at the same instant
    peak_requests = int(np.cumsum(events[:, 1]).max()) if len(events) else 0
    return peak_tokens, peak_requests


def _arrivals(scenario: Scenario) -> dict[str, Any]:
    a = scenario.workload.arrivals
    if scenario.workload.trace:
        return {"request_rate": "trace", "burstiness": None, "max_concurrency": None}
    if a.kind == "closed":
        return {"request_rate": "inf", "burstiness": 1.0, "max_concurrency": a.concurrency}
    return {"request_rate": a.rate_per_s, "burstiness": 1.0 / a.cv**2, "max_concurrency": a.concurrency}


def result_json(result: SimResult, scenario: Scenario, fmt: str) -> dict[str, Any]:
    """The run as ``fmt``'s result JSON (``fmt`` one of FORMATS)."""
    r, steps = _per_request(result), _steps(result)
    duration = float(r["finish"].max() - r["arrival"].min()) if r["finish"].size else 0.0
    completed = int(r["finish"].size)
    total_in, total_out = int(r["input"].sum()), int(r["output"].sum())

    def per_s(x: float) -> float:
        return x / duration if duration > 0 else float("nan")

    stats = {
        "ttft": _stats(r["ttft"]),
        "tpot": _stats(r["tpot"]),
        "itl": _stats(steps[:, 2], steps[:, 3]) if len(steps) else _stats(np.zeros(0)),
        "e2el": _stats(r["e2e"]),
    }
    if fmt == "vllm":
        return _vllm(result, scenario, stats, duration, completed, total_in, total_out, per_s, steps, r)
    return _sglang(scenario, stats, duration, completed, total_in, total_out, per_s, r)


def _vllm(
    result: SimResult,
    scenario: Scenario,
    stats: dict[str, dict[str, float]],
    duration: float,
    completed: int,
    total_in: int,
    total_out: int,
    per_s: Any,
    steps: np.ndarray,
    r: dict[str, np.ndarray],
) -> dict[str, Any]:
    peak_tokens, peak_requests = _peaks(r, steps)
    arrived = int(np.sum(result.table.state >= 0))
    out: dict[str, Any] = {
        "backend": "cloudmatrix",
        "label": result.scenario,
        "model_id": scenario.model,
        "tokenizer_id": scenario.model,
        "num_prompts": arrived,
        **_arrivals(scenario),
        "duration": duration,
        "completed": completed,
        "failed": arrived - completed,  # arrived but not finished when the simulation stopped
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": per_s(completed),
        "request_goodput": None,
        "output_throughput": per_s(total_out),
        "total_token_throughput": per_s(total_in + total_out),
        "max_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": peak_requests,
    }
    for metric in ("ttft", "tpot", "itl", "e2el"):
        s = stats[metric]
        out |= {f"{k}_{metric}_ms": s[k] for k in ("mean", "median", "std", "p99")}
    return out


def _sglang(
    scenario: Scenario,
    stats: dict[str, dict[str, float]],
    duration: float,
    completed: int,
    total_in: int,
    total_out: int,
    per_s: Any,
    r: dict[str, np.ndarray],
) -> dict[str, Any]:
    arrivals = _arrivals(scenario)
    out: dict[str, Any] = {
        "backend": "cloudmatrix",
        "dataset_name": "cloudmatrix-scenario",
        "request_rate": arrivals["request_rate"],
        "max_concurrency": arrivals["max_concurrency"],
        "duration": duration,
        "completed": completed,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "total_output_tokens_retokenized": total_out,
        "request_throughput": per_s(completed),
        "input_throughput": per_s(total_in),
        "output_throughput": per_s(total_out),
        "total_throughput": per_s(total_in + total_out),
    }
    for metric, name in (("e2el", "e2e_latency"), ("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl")):
        s = stats[metric]
        out |= {f"{k}_{name}_ms": s[k] for k in ("mean", "median", "std", "p90", "p99")}
    out["concurrency"] = float(r["e2e"].sum() / duration) if duration > 0 else float("nan")
    return out
