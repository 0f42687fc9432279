"""Rank deployments on the fast path: pair every decode candidate with the prefill candidates of its
precision, size both pools for the workload's input/output mix (rate matching), check the TTFT and TPOT
SLOs and score the goodput per chip of the whole deployment."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.stacks import request_fixed_s
from cloudmatrix.cost import comm
from cloudmatrix.deploy import Phase, mtp_tokens_per_step
from cloudmatrix.estimate import estimate, pool_req_s
from cloudmatrix.planner.evaluate import CandidateCost, Job, batch_curve
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload, context
from cloudmatrix.planner.pareto import pareto_front

TIE_REL = 1e-9  # a pool sizing must beat the best so far by more than float noise to replace it
KV_PRECISION = "bf16"  # the KV cache the planner deploys (and writes into scenarios)
OCCUPANCY_ROUNDS = 6  # fixed-point rounds for the decode occupancy at the planned rate


@dataclass(frozen=True, kw_only=True)
class Targets:
    """The workload's mean lengths, the SLOs, the chip budget and the planned utilisation."""

    input_len: float
    output_len: float
    ttft_slo_s: float
    tpot_slo_s: float
    budget_chips: int
    utilisation: float


def targets_for(request: PlanRequest, w: PlanWorkload, budget_chips: int) -> Targets:
    return Targets(
        input_len=w.input_len,
        output_len=w.output_len,
        ttft_slo_s=request.ttft_slo_ms / 1e3,
        tpot_slo_s=request.tpot_slo_ms / 1e3,
        budget_chips=budget_chips,
        utilisation=request.utilisation,
    )


@dataclass(frozen=True, kw_only=True)
class PlannedDeployment:
    prefill: CandidateCost
    decode: CandidateCost
    prefill_instances: int
    decode_instances: int
    rate_req_s: float  # the arrival rate the pools are sized for (utilisation × the binding pool)
    ttft_s: float
    output_tok_s_per_chip: float  # goodput: every request within both SLOs at this rate (analytic)
    meets_slo: bool

    @property
    def chips(self) -> int:
        return (
            self.prefill_instances * self.prefill.candidate.chips + self.decode_instances * self.decode.candidate.chips
        )

    @property
    def tpot_s(self) -> float:
        """TPOT at the decode batch cap (the SLO is judged here: conservative, the batch is smaller at load)."""
        return self.decode.tpot_s

    @property
    def tok_s_per_user(self) -> float:
        return 1.0 / self.tpot_s

    def to_dict(self) -> dict[str, Any]:
        p, d = self.prefill.candidate, self.decode.candidate
        return {
            "precision": p.precision,
            "chips": self.chips,
            "prefill": {
                "instances": self.prefill_instances,
                "chips": p.chips,
                "ep": p.ep,
                "tokens_per_chip": p.tokens_per_chip,
                "attention_tp": p.attention_tp,
                "cp": p.cp,
                "tp": p.tp,
                "microbatch": p.microbatch,
                "tok_s_per_chip": self.prefill.tok_s_per_chip,
                "batch_ms": self.prefill.step_s * 1e3,
                "busy": self.prefill.busy,
            },
            "decode": {
                "instances": self.decode_instances,
                "chips": d.chips,
                "ep": d.ep,
                "batch_per_chip": d.batch_per_chip,
                "mtp": d.mtp,
                "tp": d.tp,
                "microbatch": d.microbatch,
                "tok_s_per_chip": self.decode.tok_s_per_chip,
                "step_ms": self.decode.step_s * 1e3,
                "busy": self.decode.busy,
            },
            "rate_req_s": self.rate_req_s,
            "ttft_ms": self.ttft_s * 1e3,
            "tpot_ms": self.tpot_s * 1e3,
            "tok_s_per_user": self.tok_s_per_user,
            "output_tok_s_per_chip": self.output_tok_s_per_chip,
            "meets_slo": self.meets_slo,
        }


def order_key(d: PlannedDeployment) -> tuple[float, float, float, int]:
    """Best first: more goodput per chip, then lower TPOT, lower TTFT, fewer chips (then the caller's
    order, as sorting is stable). The ranking and the pairing use it, so the best of equal scores is
    never dominated by another on the Pareto front."""
    return (-d.output_tok_s_per_chip, d.tpot_s, d.ttft_s, d.chips)


def instance_req_s(cost: CandidateCost, t: Targets) -> float:
    """Requests/s one instance completes at its batch: prompts for prefill, answers for decode (whose first
    token comes from prefill, so decode emits output_len − 1 tokens per request)."""
    c = cost.candidate
    length = t.input_len if c.phase == Phase.PREFILL else t.output_len
    return pool_req_s(cost.tok_s_per_chip * c.chips, length, c.phase.value)


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival finds every server busy (M/M/c, offered load in erlangs), from the
    Erlang-B recurrence B_k = a·B/(k + a·B), which stays finite for thousands of servers where the
    power series overflows."""
    if offered >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1 - b))


def batch_time_s(curve: Sequence[tuple[int, float]], prompts: float) -> float:
    """Batch time at a number of prompts, linear between the curve's points."""
    for (k0, t0), (k1, t1) in zip(curve, curve[1:], strict=False):
        if prompts <= k1:
            return t0 + (t1 - t0) * (prompts - k0) / (k1 - k0) if prompts > k0 else t0
    return curve[-1][1]


def keep_pace_prompts(curve: Sequence[tuple[int, float]], arrivals_req_s: float) -> int | None:
    """The smallest whole-prompt batch whose throughput exceeds an instance's arrivals (None: not even a
    full batch keeps pace). Throughput grows with the batch, so the search bisects."""
    most = curve[-1][0]
    if most / curve[-1][1] <= arrivals_req_s:
        return None
    lo, hi = 1, most
    while lo < hi:
        mid = (lo + hi) // 2
        if mid / batch_time_s(curve, mid) > arrivals_req_s:
            hi = mid
        else:
            lo = mid + 1
    return lo


def ttft_s(curve: Sequence[tuple[int, float]], instances: int, rate_req_s: float, transfer_s: float) -> float:
    """Mean TTFT at a prefill load, as batching delay + pool queueing + KV transfer. Batching: an instance
    runs the smallest batch that keeps pace with its share of the arrivals; a prompt waits for half of the
    batch already running (busy a fraction ρ of the time) and rides the next one. Queueing: the
    Allen-Cunneen M/D/c wait of the pool at its full-batch capacity (bursts that outgrow one batch)."""
    per_instance = rate_req_s / instances
    prompts = keep_pace_prompts(curve, per_instance)
    if prompts is None:
        return math.inf
    batch = batch_time_s(curve, prompts)
    rho = per_instance * batch / prompts
    full_req_s = curve[-1][0] / curve[-1][1]
    wait = erlang_c(instances, rate_req_s / full_req_s) / (instances * full_req_s - rate_req_s) / 2  # cv = 0
    return batch * (1 + rho / 2) + wait + transfer_s


@dataclass(frozen=True, kw_only=True)
class _Prefill:
    """A prefill candidate with the numbers sizing needs precomputed."""

    cost: CandidateCost
    req_s: float
    transfer_s: float
    curve: tuple[tuple[int, float], ...]  # batch time against prompts per batch


class _Sizing(NamedTuple):
    score: float  # output tokens/s per chip at the rate
    prefill_instances: int
    decode_instances: int
    rate_req_s: float
    ttft_s: float


def _prefill_counts(pre: _Prefill, dec: CandidateCost, n_d: int, t: Targets, best: _Sizing | None) -> _Sizing | None:
    """For ``n_d`` decode instances, prefill counts from just below the one that keeps pace (n_p = n_d·μ_d /
    μ_p) upwards: below it the prefill pool binds and more instances pay; above it each one only lowers the
    prefill load (and TTFT) at a cost per chip, so stop at the first that meets the TTFT SLO."""
    c_p, c_d = pre.cost.candidate.chips, dec.candidate.chips
    mu_p, mu_d = pre.req_s, instance_req_s(dec, t)
    keep_pace = n_d * mu_d / mu_p
    for n_p in range(max(math.floor(keep_pace), 1), (t.budget_chips - n_d * c_d) // c_p + 1):
        rate = t.utilisation * min(n_p * mu_p, n_d * mu_d)
        score = rate * t.output_len / (n_p * c_p + n_d * c_d)
        if best is None or score > best.score * (1 + TIE_REL):
            ttft = ttft_s(pre.curve, n_p, rate, pre.transfer_s)
            if ttft <= t.ttft_slo_s:
                best = _Sizing(score, n_p, n_d, rate, ttft)
                if n_p >= keep_pace:
                    break
        elif n_p >= keep_pace:
            break
    return best


def size_pools(pre: _Prefill, dec: CandidateCost, t: Targets) -> PlannedDeployment | None:
    """Instance counts within the budget that maximise goodput per chip at the planned utilisation of the
    binding pool, within the TTFT SLO; the first decode count wins ties. None when nothing fits."""
    best: _Sizing | None = None
    n_d = 1
    while n_d * dec.candidate.chips + pre.cost.candidate.chips <= t.budget_chips:
        best = _prefill_counts(pre, dec, n_d, t, best)
        n_d += 1
    if best is None:
        return None
    return PlannedDeployment(
        prefill=pre.cost,
        decode=dec,
        prefill_instances=best.prefill_instances,
        decode_instances=best.decode_instances,
        rate_req_s=best.rate_req_s,
        ttft_s=best.ttft_s,
        output_tok_s_per_chip=best.score,
        meets_slo=dec.tpot_s <= t.tpot_slo_s,
    )


def resized(
    d: PlannedDeployment, prefill_instances: int, decode_instances: int, t: Targets, job: Job
) -> PlannedDeployment:
    """The same instances in other counts (a slice of a deployment, for a check), offered the planned
    utilisation of their binding pool, with the TTFT and goodput that follow."""
    hw, model = context(job.system, job.model, job.overrides)
    p = d.prefill.candidate
    rate = t.utilisation * min(
        prefill_instances * instance_req_s(d.prefill, t), decode_instances * instance_req_s(d.decode, t)
    )
    transfer = handoff_s(job, hw, model, p.kv_group)
    chips = prefill_instances * p.chips + decode_instances * d.decode.candidate.chips
    return dataclasses.replace(
        d,
        prefill_instances=prefill_instances,
        decode_instances=decode_instances,
        rate_req_s=rate,
        ttft_s=ttft_s(batch_curve(job, p), prefill_instances, rate, transfer),
        output_tok_s_per_chip=rate * t.output_len / chips,
    )


def handoff_s(job: Job, hw: Hardware, model: ModelSpec, kv_group: int) -> float:
    """What a prompt spends outside the prefill batch before its first token: the KV transfer to decode, and
    the serving stack's fixed time (its front end and the hand-off handshake)."""
    fixed = request_fixed_s(job.stack, hw.chip.family, disaggregated=True)
    return comm.kv_handoff_s(hw, model, job.input_len, KV_PRECISION, kv_group) + fixed


def operating_tpot_s(d: PlannedDeployment, t: Targets, job: Job) -> float:
    """TPOT at the decode occupancy the planned rate gives (Little's law: sequences in decode = rate × steps
    per answer × step time), rounded up to whole sequences on the busiest die as the simulation prices it."""
    hw, model = context(job.system, job.model, job.overrides)
    c = d.decode.candidate
    dep = c.deployment(job.input_len, job.output_len, job.mtp_acceptance, job.stack)
    accepted = mtp_tokens_per_step(c.mtp, dep.mtp_acceptance)
    ranks = d.decode_instances * c.chips * hw.chip.num_dies // c.tp  # dies, or tensor-parallel groups
    cap = c.batch_per_chip * c.tp // hw.chip.num_dies
    step_s = d.decode.step_s
    for _ in range(OCCUPANCY_ROUNDS):
        want = d.rate_req_s * max(t.output_len - 1, 1) / accepted * step_s / ranks
        seqs = min(cap, max(math.ceil(want), 1))
        batch = seqs * hw.chip.num_dies / c.tp
        step_s = estimate(hw, model, dataclasses.replace(dep, batch_per_chip=batch)).step.step_s
    return step_s / accepted


def prefill_shortlist(costs: Sequence[CandidateCost], t: Targets, job: Job) -> list[_Prefill]:
    """Per precision and instance size, the prefill candidates that are best on throughput or on TTFT
    floor (lone prompt + KV transfer): every other one is beaten on both, whatever the decode side. Only
    these get a batch curve."""
    hw, model = context(job.system, job.model, job.overrides)
    groups: dict[tuple[str, int], list[tuple[CandidateCost, float, float]]] = {}
    for cost in costs:
        c = cost.candidate
        if c.phase == Phase.PREFILL and cost.feasible:
            transfer = handoff_s(job, hw, model, c.kv_group)
            groups.setdefault((c.precision, c.chips), []).append((cost, instance_req_s(cost, t), transfer))
    out: list[_Prefill] = []
    for group in groups.values():
        front = pareto_front([(req_s, -(cost.lone_prompt_s + transfer)) for cost, req_s, transfer in group])
        for cost, req_s, transfer in (group[i] for i in sorted(front)):
            out.append(_Prefill(cost=cost, req_s=req_s, transfer_s=transfer, curve=batch_curve(job, cost.candidate)))
    return out


@dataclass(frozen=True, kw_only=True)
class Ranking:
    deployments: list[PlannedDeployment]  # one per decode candidate that pairs within the TTFT SLO
    ranked: list[PlannedDeployment]  # those meeting both SLOs, best goodput per chip first
    pareto: list[PlannedDeployment]  # non-dominated in (tok/s per user, goodput per chip), any TPOT
    best_decode: CandidateCost | None  # the decode instance with the most tok/s per chip within the TPOT SLO


def rank(costs: Sequence[CandidateCost], t: Targets, job: Job) -> Ranking:
    shortlist = prefill_shortlist(costs, t, job)
    deployments = []
    for dec in costs:
        if dec.candidate.phase != Phase.DECODE or not dec.feasible:
            continue
        pairs = [
            sized
            for pre in shortlist
            if pre.cost.candidate.precision == dec.candidate.precision and (sized := size_pools(pre, dec, t))
        ]
        if pairs:
            deployments.append(min(pairs, key=order_key))  # of equal keys, the first in the shortlist
    ranked = sorted((d for d in deployments if d.meets_slo), key=order_key)
    front = pareto_front([(d.tok_s_per_user, d.output_tok_s_per_chip) for d in deployments])
    within = [c for c in costs if c.candidate.phase == Phase.DECODE and c.feasible and c.tpot_s <= t.tpot_slo_s]
    best_decode = max(within, key=lambda c: c.tok_s_per_chip, default=None)
    return Ranking(
        deployments=deployments, ranked=ranked, pareto=[deployments[i] for i in front], best_decode=best_decode
    )
