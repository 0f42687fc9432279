"""The check path: a planned deployment re-run in the simulation with the workload, analytic beside
simulated, and every disagreement over 10 % flagged."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudmatrix.deploy import mtp_tokens_per_step
from cloudmatrix.estimate import estimate
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload, context
from cloudmatrix.planner.rank import PlannedDeployment
from cloudmatrix.planner.scenario_out import scenario_dict
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.metrics import SimResult
from cloudmatrix.sim.scenario import Scenario

FLAG_REL = 0.10
STEADY_FROM = 0.5
OCCUPANCY_ROUNDS = 6
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


def operating_tpot_s(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> float:
    """TPOT at the decode occupancy the planned rate gives (Little's law: sequences in decode = rate × steps
    per answer × step time), rounded up to whole sequences on the busiest die as the simulation prices it."""
    hw, model = context(request.system, request.model, request.hardware_overrides)
    c = d.decode.candidate
    dep = c.deployment(round(w.input_len), round(w.output_len), request.mtp_acceptance)
    accepted = mtp_tokens_per_step(c.mtp, dep.mtp_acceptance)
    dies = d.decode_instances * c.chips * hw.chip.num_dies
    cap = c.batch_per_chip // hw.chip.num_dies
    seqs, step_s = cap, d.decode.step_s
    for _ in range(OCCUPANCY_ROUNDS):
        want = d.rate_req_s * max(w.output_len - 1, 1) / accepted * step_s / dies
        seqs = min(cap, max(math.ceil(want), 1))
        step_s = estimate(hw, model, dataclasses.replace(dep, batch_per_chip=seqs * hw.chip.num_dies)).step.step_s
    return step_s / accepted


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


def check(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> Check:
    scenario = Scenario.model_validate(scenario_dict(d, w, request))
    result = simulate(scenario)
    out = result.to_dict()
    analytic = {
        "output_tok_s_per_chip": d.rate_req_s * w.output_len / d.chips,
        "ttft_ms": d.ttft_s * 1e3,
        "tpot_ms": operating_tpot_s(d, w, request) * 1e3,
    }
    simulated = steady_metrics(result)
    errors = {k: _error_pct(analytic[k], simulated[k]) for k in analytic}
    span_s, e2e_s = _window(result)[1], d.ttft_s + w.output_len * d.tpot_s
    short = span_s < MIN_LIFETIMES * e2e_s  # e.g. a short trace: the pools never reach steady state
    return Check(
        analytic=analytic,
        simulated=simulated,
        error_pct=errors,
        flagged=[k for k, e in errors.items() if not abs(e) <= FLAG_REL * 100],
        slo_attainment=out["slo_attainment"],
        requests=scenario.requests,
        extra={
            "note": f"arrivals span {span_s:.1f} s, under {MIN_LIFETIMES} request lifetimes: not steady"
            if short
            else "",
            # the whole run, as `cloudmatrix simulate` reports the written scenario
            "run": {
                "ttft_ms": out["ttft_ms"],
                "tpot_ms": out["tpot_ms"],
                "throughput_per_chip_tok_s": out["throughput_per_chip_tok_s"],
                "goodput_req_s": out["goodput_req_s"],
                "sim_time_s": out["sim_time_s"],
            },
        },
    )
