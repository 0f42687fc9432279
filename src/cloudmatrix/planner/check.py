"""The check path: a planned deployment (or, when it is too large for a steady run, a rate-matched slice of
it) re-run in the simulation with the workload, the ranked row's analytic figures beside the simulated
ones, and every disagreement over 10 % flagged."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from cloudmatrix.catalog.sourced import describe_validation_error
from cloudmatrix.errors import ConfigError
from cloudmatrix.planner.evaluate import job_for
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload
from cloudmatrix.planner.rank import PlannedDeployment, operating_tpot_s, resized, targets_for
from cloudmatrix.planner.scenario_out import MAX_CHECK_REQUESTS, STEADY_WINDOW_S, scenario_dict, steady_requests
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.metrics import SimResult
from cloudmatrix.sim.scenario import Scenario

FLAG_REL = 0.10
STEADY_FROM = 0.5
MAX_CHECKED = 20  # deployments re-run in simulation per plan (each a run of up to MAX_CHECK_REQUESTS requests)
MIN_LIFETIMES = 2  # a steady window needs arrivals over at least this many request lifetimes


@dataclass(frozen=True, kw_only=True)
class Check:
    analytic: dict[str, float]
    simulated: dict[str, float]
    error_pct: dict[str, float]
    flagged: list[str]
    slo_attainment: float
    requests: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analytic": self.analytic,
            "simulated": self.simulated,
            "error_pct": self.error_pct,
            "flagged": self.flagged,
            "slo_attainment": self.slo_attainment,
            "requests": self.requests,
            **self.extra,
        }


def slice_counts(prefill_instances: int, decode_instances: int, reduce_by: int) -> tuple[int, int]:
    """Instance counts about 1/``reduce_by`` of the deployment's in the same proportion: an exact share
    (1/k of both, for the smallest divisor k ≥ ``reduce_by`` of their gcd) where there is one, else the
    nearest proportional counts."""
    n_p, n_d = prefill_instances, decode_instances
    g = math.gcd(n_p, n_d)
    exact = [k for k in range(max(reduce_by, 1), g + 1) if g % k == 0]
    if exact:
        return n_p // exact[0], n_d // exact[0]
    b = max(n_d // reduce_by, 1)
    return max(round(n_p * b / n_d), 1), b


def capped_run_is_steady(d: PlannedDeployment, w: PlanWorkload) -> bool:
    """Whether MAX_CHECK_REQUESTS arrivals at the planned rate span a steady window: at least STEADY_WINDOW_S
    and MIN_LIFETIMES request lifetimes."""
    e2e_s = d.ttft_s + w.output_len * d.tpot_s
    return MAX_CHECK_REQUESTS / d.rate_req_s >= max(STEADY_WINDOW_S, MIN_LIFETIMES * e2e_s)


def check_slice(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> PlannedDeployment:
    """What a check simulates: the deployment itself when a steady run of it fits MAX_CHECK_REQUESTS, else
    a slice of its instances at the rate that keeps their binding pool at the planned utilisation. Poisson
    arrivals split over identical slices are Poisson at the slice's share of the rate, so the slice sees
    what one part of the deployment sees (bar the routing across slices). A deployment whose capped run still
    spans a steady window (what `_notes` calls steady) is run whole: a slice's instance counts only approximate
    the deployment's proportions, so slicing one just past the cap would test a different deployment."""
    if capped_run_is_steady(d, w):
        return d
    reduce_by = math.ceil(steady_requests(d, w) / MAX_CHECK_REQUESTS)
    counts = slice_counts(d.prefill_instances, d.decode_instances, reduce_by)
    if reduce_by <= 1 or counts == (d.prefill_instances, d.decode_instances):
        return d
    return resized(d, *counts, targets_for(request, w, d.chips), job_for(request, w))


def _window(result: SimResult) -> tuple[float, float]:
    """The steady window: the second half of the arrivals, after the pools have filled."""
    last_arrival = float(np.nanmax(result.table.arrival_s))
    return STEADY_FROM * last_arrival, last_arrival


def steady_metrics(result: SimResult) -> dict[str, float]:
    """Served output tokens/s per chip (first tokens from prefill plus decode tokens) in the steady window,
    and the mean TTFT and TPOT of the requests that arrived in it."""
    t = result.table
    start, end = _window(result)
    steps = np.array(result.recorder.decode_steps) if result.recorder.decode_steps else np.zeros((0, 6))
    in_window = (steps[:, 1] >= start) & (steps[:, 1] < end)
    first = np.sum((t.first_token_s >= start) & (t.first_token_s < end))
    tokens = float(steps[in_window, 4].sum()) + float(first)
    served = tokens / (end - start) / (result.prefill_chips + result.decode_chips) if end > start else 0.0
    done = np.nonzero((t.state == State.DONE) & (t.arrival_s >= start) & (t.arrival_s <= end))[0]
    ttft = t.first_token_s[done] - t.arrival_s[done]
    tpot = (t.finish_s[done] - t.first_token_s[done]) / np.maximum(t.output_len[done] - 1, 1)
    return {
        "output_tok_s_per_chip": served,
        "ttft_ms": float(ttft.mean()) * 1e3 if done.size else math.nan,
        "tpot_ms": float(tpot.mean()) * 1e3 if done.size else math.nan,
    }


def _error_pct(analytic: float, simulated: float) -> float:
    return (simulated - analytic) / analytic * 100 if analytic else math.inf


def _notes(d: PlannedDeployment, simulated: PlannedDeployment, span_s: float, e2e_s: float) -> tuple[str, bool]:
    """What was simulated when it is not the whole deployment, and whether the run had a steady window."""
    notes = []
    if simulated is not d:
        notes.append(
            f"simulated {simulated.prefill_instances} of {d.prefill_instances} prefill + "
            f"{simulated.decode_instances} of {d.decode_instances} decode instances ({simulated.chips} chips) at "
            f"{simulated.rate_req_s:,.1f} of {d.rate_req_s:,.1f} req/s, against the ranked figures"
        )
    steady = span_s >= MIN_LIFETIMES * e2e_s  # e.g. a short trace: the pools never reach steady state
    if not steady:
        notes.append(f"arrivals span {span_s:.1f} s, under {MIN_LIFETIMES} request lifetimes: not steady")
    return "; ".join(notes), steady


def _analytic(d: PlannedDeployment, request: PlanRequest, w: PlanWorkload) -> dict[str, float]:
    """A deployment's analytic figures at its planned rate: what its ranked row shows."""
    t, job = targets_for(request, w, d.chips), job_for(request, w)
    return {
        "output_tok_s_per_chip": d.rate_req_s * w.output_len / d.chips,
        "ttft_ms": d.ttft_s * 1e3,
        "tpot_ms": operating_tpot_s(d, t, job) * 1e3,
    }


def _run_summary(out: dict[str, Any]) -> dict[str, Any]:
    """The whole run, as `cloudmatrix simulate` reports the scenario simulated: the written one, unless the
    check simulated a slice."""
    keys = ("ttft_ms", "tpot_ms", "throughput_per_chip_tok_s", "goodput_req_s", "sim_time_s")
    return {k: out[k] for k in keys}


def check(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> Check:
    """The ranked operating point tested: the simulated run (of the deployment, or of a slice of it at the
    same load per instance) against the figures the ranked row shows, every difference over 10 % flagged."""
    simulated_d = check_slice(d, w, request)
    try:
        scenario = Scenario.model_validate(scenario_dict(simulated_d, w, request))
    except ValidationError as e:  # e.g. a --load so low that the check's arrivals span centuries
        raise ConfigError(f"cannot check a planned deployment in simulation: {describe_validation_error(e)}") from None
    result = simulate(scenario)
    out = result.to_dict()
    analytic = _analytic(d, request, w)
    simulated = steady_metrics(result)
    errors = {k: _error_pct(analytic[k], simulated[k]) for k in analytic}
    note, steady = _notes(d, simulated_d, _window(result)[1], d.ttft_s + w.output_len * d.tpot_s)
    sliced = simulated_d is not d
    return Check(
        analytic=analytic,
        simulated=simulated,
        error_pct=errors,
        flagged=[k for k, e in errors.items() if not abs(e) <= FLAG_REL * 100],
        slo_attainment=out["slo_attainment"],
        requests=scenario.requests,
        extra={
            "note": note,
            "steady": steady,
            "slice": {
                "prefill_instances": simulated_d.prefill_instances,
                "decode_instances": simulated_d.decode_instances,
                "chips": simulated_d.chips,
                "rate_req_s": simulated_d.rate_req_s,
                "analytic": _analytic(simulated_d, request, w),  # the slice's own (how representative it is)
            }
            if sliced
            else None,
            "run": _run_summary(out),
        },
    )
