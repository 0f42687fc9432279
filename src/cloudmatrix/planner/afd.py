"""`plan --afd`: the attention:FFN split of an AFD decode instance and its microbatch count. For each decode
instance size, attention share and microbatch count, the largest attention batch whose TPOT meets the SLO
(by bisection over the batch grid: TPOT grows with the batch) and its output tokens/s per chip over both
pools; the best is run in simulation beside the system's published prefill instances, sized to keep pace."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model
from cloudmatrix.catalog.presets import default_stack, presets
from cloudmatrix.cost.afd_result import AfdEstimate, estimate_afd, same_dies_decode
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.deployment import AfdDeployment
from cloudmatrix.errors import CloudMatrixError, ConfigError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate, pool_req_s

ATTENTION_EIGHTHS = (3, 4, 5, 6)  # attention pool's share of the decode instance, in eighths
MICROBATCHES = (1, 2, 3, 4)
DECODE_CHIPS = (64, 96, 128, 160, 192)  # decode instance sizes searched where the system holds them
CHECK_REQUESTS = 2000
CHECK_LOAD = 0.9  # the simulated arrival rate over the matched pools' capacity


@dataclass(frozen=True, kw_only=True)
class AfdJob:
    system: str
    model: str
    input_len: int
    output_len: int
    tpot_slo_ms: float
    mtp: int = 1
    mtp_acceptance: float = 0.7
    precision: str = "int8"
    stack: str | None = None
    decode_chips: tuple[int, ...] = DECODE_CHIPS
    microbatches: tuple[int, ...] = MICROBATCHES
    budget_chips: int | None = None  # decode and one prefill instance together; default: the whole system


@dataclass(frozen=True, kw_only=True)
class AfdChoice:
    attention_chips: int
    ffn_chips: int
    microbatches: int
    batch_per_chip: int  # sequences per attention chip
    estimate: AfdEstimate

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {
            "attention_chips": self.attention_chips,
            "ffn_chips": self.ffn_chips,
            "microbatches": self.microbatches,
            "batch_per_chip": self.batch_per_chip,
            "tpot_ms": e.tpot_s * 1e3,
            "decode_tok_s_per_chip": e.throughput_per_chip_tok_s,
            "utilisation": e.step.utilisation(),
        }


def _deployment(job: AfdJob, attention: int, ffn: int, mb: int, batch: int) -> AfdDeployment:
    a = Deployment(
        phase=Phase.DECODE,
        num_chips=attention,
        batch_per_chip=batch,
        input_len=job.input_len,
        output_len=job.output_len,
        precision=job.precision,
        mtp=job.mtp,
        mtp_acceptance=job.mtp_acceptance if job.mtp else 0.0,
        eplb=Eplb.DEFAULT,
        stack=job.stack or default_stack(job.system),
    )
    return AfdDeployment(attention=a, ffn_chips=ffn, microbatches=mb)


def _priced(job: AfdJob, hw: Hardware, model: ModelSpec, attention: int, ffn: int, mb: int, batch: int) -> Any:
    try:
        return estimate_afd(hw, model, _deployment(job, attention, ffn, mb, batch))
    except InfeasibleDeploymentError:
        return None


def best_batch(job: AfdJob, hw: Hardware, model: ModelSpec, attention: int, ffn: int, mb: int) -> AfdChoice | None:
    """The largest batch per attention chip (whole sequences per die, at least one per microbatch) that fits
    and meets the TPOT SLO, by bisection; None if none does."""
    dies = hw.chip.num_dies
    lo_batch = max(dies, math.ceil(mb / attention / dies) * dies)
    probe = _priced(job, hw, model, attention, ffn, mb, lo_batch)
    if probe is None or probe.tpot_s * 1e3 > job.tpot_slo_ms:
        return None
    grid = list(range(lo_batch, int(probe.attention_memory.max_batch_per_chip) + 1, dies))
    lo, hi, best = 0, len(grid) - 1, (grid[0], probe)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        est = _priced(job, hw, model, attention, ffn, mb, grid[mid])
        if est is not None and est.tpot_s * 1e3 <= job.tpot_slo_ms:
            lo, best = mid, (grid[mid], est)
        else:
            hi = mid - 1
    return AfdChoice(
        attention_chips=attention, ffn_chips=ffn, microbatches=mb, batch_per_chip=best[0], estimate=best[1]
    )


def search(job: AfdJob) -> list[AfdChoice]:
    """Every feasible (decode size, attention share, microbatches) at its best batch, best first (output
    tokens/s per chip over both pools; ties: fewer chips, then fewer microbatches)."""
    hw, model = load_hardware(job.system), load_model(job.model)
    per_node = int(hw.system.chips_per_node.value)
    prefill = presets().get(job.system, {}).get("prefill", {}).get("chips", 0)
    room = (job.budget_chips or hw.system.num_chips) - prefill
    out = []
    for total in job.decode_chips:
        if total > min(room, hw.system.num_chips):
            continue
        for eighths in ATTENTION_EIGHTHS:
            attention = total * eighths // 8 // per_node * per_node
            if not 0 < attention < total:
                continue
            for mb in job.microbatches:
                choice = best_batch(job, hw, model, attention, total - attention, mb)
                if choice is not None:
                    out.append(choice)
    out.sort(key=lambda c: (-c.estimate.throughput_per_chip_tok_s, c.attention_chips + c.ffn_chips, c.microbatches))
    return out


def scenario_for(job: AfdJob, choice: AfdChoice, requests: int = CHECK_REQUESTS) -> dict[str, Any]:
    """The choice behind the system's published prefill instances, as many as keep pace with its decode
    instance (within the system), at ``CHECK_LOAD`` of the pools' matched capacity."""
    preset = presets().get(job.system)
    if preset is None:
        raise ConfigError(f"no published prefill preset for {job.system}; presets exist for {', '.join(presets())}")
    p = preset["prefill"]
    prefill = Deployment(
        phase=Phase.PREFILL,
        num_chips=p["chips"],
        ep=p["ep"],
        tokens_per_chip=p["tokens_per_chip"],
        input_len=job.input_len,
        precision=job.precision,
        microbatch=p.get("microbatch"),
        eplb=Eplb.DEFAULT,
        stack=job.stack or default_stack(job.system),
    )
    pre = estimate(job.system, job.model, prefill)
    prefill_req = pool_req_s(pre.throughput_per_chip_tok_s, job.input_len, "prefill") * p["chips"]
    chips = choice.attention_chips + choice.ffn_chips
    decode_req = pool_req_s(choice.estimate.throughput_per_chip_tok_s, job.output_len, "decode") * chips
    room = (load_hardware(job.system).system.num_chips - chips) // p["chips"]
    instances = max(min(math.ceil(decode_req / prefill_req), room), 1)
    rate = CHECK_LOAD * min(decode_req, instances * prefill_req)
    return {
        "name": f"plan-afd-{job.system}",
        "system": job.system,
        "model": job.model,
        "precision": job.precision,
        **({"stack": job.stack} if job.stack else {}),
        "prefill": {
            "instances": instances,
            "chips": p["chips"],
            "ep": p["ep"],
            "tokens_per_chip": p["tokens_per_chip"],
        },
        "decode": {
            "instances": 1,
            "chips": choice.attention_chips,
            "batch_per_chip": choice.batch_per_chip,
            "mtp": job.mtp,
            "mtp_acceptance": job.mtp_acceptance if job.mtp else 0.0,
            "eplb": "default",
            "afd": {"ffn_chips": choice.ffn_chips, "microbatches": choice.microbatches},
        },
        "workload": {
            "input": {"kind": "fixed", "value": job.input_len},
            "output": {"kind": "fixed", "value": job.output_len},
            "arrivals": {"kind": "poisson", "rate_per_s": rate},
        },
        "slo": {"tpot_ms": job.tpot_slo_ms},
        "requests": requests,
        "seed": 0,
    }


def same_dies(job: AfdJob, choice: AfdChoice) -> dict[str, Any]:
    """The same dies and sequences without AFD, or why that does not run."""
    try:
        est = estimate(job.system, job.model, same_dies_decode(choice.estimate.afd))
    except CloudMatrixError as e:
        return {"refused": str(e)}
    return {"tpot_ms": est.tpot_s * 1e3, "decode_tok_s_per_chip": est.throughput_per_chip_tok_s}


def check(job: AfdJob, choice: AfdChoice, requests: int = CHECK_REQUESTS) -> dict[str, Any]:
    """The choice simulated: median TPOT and the decode pool's output tokens/s per chip beside the analytic
    figures (the simulation's decode pool runs at the arrival rate, the analytic one at its batch cap)."""
    from cloudmatrix.sim.engine import simulate
    from cloudmatrix.sim.scenario import Scenario

    scenario = Scenario.model_validate(scenario_for(job, choice, requests))
    result = simulate(scenario)
    tpot = result.tpot_s()
    simulated_tpot_ms = float(sorted(tpot)[len(tpot) // 2]) * 1e3 if len(tpot) else math.nan
    analytic_ms = choice.estimate.tpot_s * 1e3
    return {
        "scenario": scenario_for(job, choice, requests),
        "tpot_ms": {"analytic_at_cap": analytic_ms, "simulated_p50": simulated_tpot_ms},
        "tpot_within_slo": simulated_tpot_ms <= job.tpot_slo_ms,
        "decode_tok_s_per_chip": {
            "analytic_at_cap": choice.estimate.throughput_per_chip_tok_s,
            "simulated": result.throughput().get("decode", 0.0),
        },
        "requests_done": int(len(result.done_ids())),
    }
