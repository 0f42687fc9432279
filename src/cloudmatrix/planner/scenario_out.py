"""A planned deployment as a scenario: the mapping `simulate` validates, and the YAML text that
`cloudmatrix simulate PATH` runs as is (the CLI writes it)."""

from __future__ import annotations

from typing import Any

import yaml

from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload, resolved_model
from cloudmatrix.planner.rank import KV_PRECISION, PlannedDeployment
from cloudmatrix.planner.space import PREFILL_EPLB

MIN_CHECK_REQUESTS = 1000
MAX_CHECK_REQUESTS = 20000
STEADY_WINDOW_S = 40.0  # arrivals span at least this long, so a steady window follows the ramp-up
WINDOW_PER_E2E = 4.0  # ... and at least four request lifetimes


def steady_requests(d: PlannedDeployment, w: PlanWorkload) -> int:
    """Requests whose arrivals at the planned rate span a steady window after the ramp-up (uncapped)."""
    e2e_s = d.ttft_s + w.output_len * d.tpot_s
    return max(round(d.rate_req_s * max(STEADY_WINDOW_S, WINDOW_PER_E2E * e2e_s)), MIN_CHECK_REQUESTS)


def check_requests(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> int:
    """Enough requests for a steady window, at most MAX_CHECK_REQUESTS (a larger deployment is checked on
    a slice, check.py); a trace is replayed at most once."""
    n = request.check_requests or min(steady_requests(d, w), MAX_CHECK_REQUESTS)
    return min(n, w.trace_requests) if w.trace_requests else n


def _workload(d: PlannedDeployment, w: PlanWorkload) -> dict[str, Any]:
    spec = w.spec.model_dump(exclude_none=True, exclude={"arrivals"})
    if w.spec.trace:
        # replay the trace at the planned rate: timestamps scale by (trace rate / planned rate)
        spec = {
            "trace": w.spec.trace,
            "time_scale": w.spec.time_scale * (w.trace_rate_req_s or d.rate_req_s) / d.rate_req_s,
        }
    else:
        spec["arrivals"] = {"kind": "poisson", "rate_per_s": d.rate_req_s}
    return spec


def scenario_dict(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> dict[str, Any]:
    p, c = d.prefill.candidate, d.decode.candidate
    return {
        "name": f"plan-{request.system}-{request.model.rsplit('/', 1)[-1]}",
        "system": request.system,
        "model": resolved_model(request.model),
        "precision": p.precision,
        "kv_precision": KV_PRECISION,
        "stack": request.stack or default_stack(request.system),
        "prefill": {
            "instances": d.prefill_instances,
            "chips": p.chips,
            "ep": p.ep,
            "tokens_per_chip": p.tokens_per_chip,
            "microbatch": p.microbatch,
            "attention_tp": p.attention_tp,
            "eplb": PREFILL_EPLB.value,
            "tp": p.tp,
            **({"cp": p.cp} if p.cp > 1 else {}),
        },
        "decode": {
            "instances": d.decode_instances,
            "chips": c.chips,
            "ep": c.ep,
            "batch_per_chip": c.batch_per_chip,
            "mtp": c.mtp,
            "mtp_acceptance": request.mtp_acceptance if c.mtp else 0.0,
            "eplb": "default",
            "microbatch": c.microbatch,
            "tp": c.tp,
        },
        "workload": _workload(d, w),
        "slo": {"ttft_ms": request.ttft_slo_ms, "tpot_ms": request.tpot_slo_ms},
        "requests": check_requests(d, w, request),
        "seed": request.seed,
    }


def scenario_yaml(d: PlannedDeployment, w: PlanWorkload, request: PlanRequest) -> str:
    """The scenario with a header of what the planner predicted for it."""
    head = [
        f"# Planned by `cloudmatrix plan` for {request.model} on {request.system}, workload {w.name},",
        f"# SLOs TTFT {request.ttft_slo_ms:g} ms / TPOT {request.tpot_slo_ms:g} ms, {d.chips} chips.",
        f"# Predicted: {d.output_tok_s_per_chip:,.1f} output tok/s per chip at {d.rate_req_s:,.2f} req/s, "
        f"TTFT {d.ttft_s * 1e3:,.0f} ms, TPOT {d.tpot_s * 1e3:.1f} ms at the decode batch cap.",
    ]
    if not request.check_requests and steady_requests(d, w) > MAX_CHECK_REQUESTS:
        span_s = MAX_CHECK_REQUESTS / d.rate_req_s
        head.append(
            f"# requests capped at {MAX_CHECK_REQUESTS:,}: arrivals span {span_s:.1f} s, short of 40 s and four "
            f"request lifetimes ({steady_requests(d, w):,} requests); raise `requests` for a longer run."
        )
    if request.hardware_overrides:
        head.append(
            f"# Planned with hardware overrides the scenario cannot carry: {', '.join(request.hardware_overrides)}"
        )
    return "\n".join(head) + "\n" + yaml.safe_dump(scenario_dict(d, w, request), sort_keys=False)
