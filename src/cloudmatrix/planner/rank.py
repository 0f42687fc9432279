"""Rank deployments on the fast path: pair every decode candidate with the prefill candidates of its
precision, size both pools for the workload's input/output mix (rate matching), check the TTFT and TPOT
SLOs and score the goodput per chip of the whole deployment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.cost import comm
from cloudmatrix.deploy import BYTES_PER_ELEMENT, Phase
from cloudmatrix.planner.evaluate import CandidateCost, Job, batch_curve
from cloudmatrix.planner.inputs import context
from cloudmatrix.planner.pareto import pareto_front

TIE_REL = 1e-9  # a pool sizing must beat the best so far by more than float noise to replace it


@dataclass(frozen=True, kw_only=True)
class Targets:
    """The workload's mean lengths, the SLOs, the chip budget and the planned utilisation."""

    input_len: float
    output_len: float
    ttft_slo_s: float
    tpot_slo_s: float
    budget_chips: int
    utilisation: float


@dataclass(frozen=True, kw_only=True)
class PlannedDeployment:
    prefill: CandidateCost
    decode: CandidateCost
    prefill_instances: int
    decode_instances: int
    rate_req_s: float  # the arrival rate the pools are sized for (utilisation × the binding pool)
    ttft_s: float
    kv_transfer_s: float
    output_tok_s_per_chip: float  # goodput: every request within both SLOs at this rate (analytic)
    meets_slo: bool

    @property
    def chips(self) -> int:
        return (
            self.prefill_instances * self.prefill.candidate.chips + self.decode_instances * self.decode.candidate.chips
        )

    @property
    def tpot_s(self) -> float:
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
                "microbatch": p.microbatch,
                "tok_s_per_chip": self.prefill.tok_s_per_chip,
                "batch_ms": self.prefill.step_s * 1e3,
            },
            "decode": {
                "instances": self.decode_instances,
                "chips": d.chips,
                "ep": d.ep,
                "batch_per_chip": d.batch_per_chip,
                "mtp": d.mtp,
                "microbatch": d.microbatch,
                "tok_s_per_chip": self.decode.tok_s_per_chip,
                "step_ms": self.decode.step_s * 1e3,
            },
            "rate_req_s": self.rate_req_s,
            "ttft_ms": self.ttft_s * 1e3,
            "tpot_ms": self.tpot_s * 1e3,
            "tok_s_per_user": self.tok_s_per_user,
            "output_tok_s_per_chip": self.output_tok_s_per_chip,
            "meets_slo": self.meets_slo,
        }


def instance_req_s(cost: CandidateCost, t: Targets) -> float:
    """Requests/s one instance completes at its batch: prompts for prefill, answers for decode."""
    c = cost.candidate
    length = t.input_len if c.phase == Phase.PREFILL else t.output_len
    return cost.tok_s_per_chip * c.chips / length


def balanced_rate_per_chip(prefill_req_s_per_chip: float, decode_req_s_per_chip: float) -> float:
    """Rate matching in closed form: a fraction f = D / (P + D) of the chips prefills, so that f·P = (1−f)·D
    and a chip serves P·D / (P + D) requests/s (the harmonic combination of the two pools)."""
    p, d = prefill_req_s_per_chip, decode_req_s_per_chip
    return p * d / (p + d)


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival finds every server busy (M/M/c, offered load in erlangs)."""
    if offered >= servers:
        return 1.0
    term, total = 1.0, 1.0
    for k in range(1, servers):
        term *= offered / k
        total += term
    last = term * offered / servers * servers / (servers - offered)
    return last / (total + last)


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


def kv_transfer_s(hw: Hardware, model: ModelSpec, input_len: float, attention_tp: int) -> float:
    """One prompt's BF16 KV over the scale-out plane, striped over its TP group's NICs (as the simulation)."""
    kv = model.kv_bytes(int(round(input_len)), BYTES_PER_ELEMENT["bf16"])
    return comm.transfer_s(hw.system.planes.scale_out, kv, dies=attention_tp)


@dataclass(frozen=True, kw_only=True)
class _Prefill:
    """A prefill candidate with the numbers sizing needs precomputed."""

    cost: CandidateCost
    req_s: float
    transfer_s: float
    curve: tuple[tuple[int, float], ...]  # batch time against prompts per batch


def size_pools(pre: _Prefill, dec: CandidateCost, t: Targets) -> PlannedDeployment | None:
    """Instance counts within the budget that maximise goodput per chip: for each decode count, prefill
    counts from just below the one that keeps pace (n_p = n_d·μ_d / μ_p) upwards until one meets the TTFT
    SLO, at the planned utilisation of the binding pool. None when nothing fits."""
    c_p, c_d = pre.cost.candidate.chips, dec.candidate.chips
    mu_p, mu_d = pre.req_s, instance_req_s(dec, t)
    best: tuple[float, int, int, float, float] | None = None
    n_d = 1
    while n_d * c_d + c_p <= t.budget_chips:
        most = (t.budget_chips - n_d * c_d) // c_p
        keep_pace = n_d * mu_d / mu_p
        n_p = max(math.floor(keep_pace), 1)
        # below keep_pace the prefill pool binds and more instances pay; above it each one only lowers the
        # prefill load (and TTFT) at a cost per chip, so stop at the first that meets the TTFT SLO
        while n_p <= most:
            rate = t.utilisation * min(n_p * mu_p, n_d * mu_d)
            score = rate * t.output_len / (n_p * c_p + n_d * c_d)
            beats = best is None or score > best[0] * (1 + TIE_REL)
            if beats:
                ttft = ttft_s(pre.curve, n_p, rate, pre.transfer_s)
                if ttft <= t.ttft_slo_s:
                    best = (score, n_p, n_d, rate, ttft)
                    if n_p >= keep_pace:
                        break
            elif n_p >= keep_pace:
                break
            n_p += 1
        n_d += 1
    if best is None:
        return None
    score, n_p, n_d, rate, ttft = best
    return PlannedDeployment(
        prefill=pre.cost,
        decode=dec,
        prefill_instances=n_p,
        decode_instances=n_d,
        rate_req_s=rate,
        ttft_s=ttft,
        kv_transfer_s=pre.transfer_s,
        output_tok_s_per_chip=score,
        meets_slo=dec.tpot_s <= t.tpot_slo_s,
    )


def prefill_shortlist(costs: Sequence[CandidateCost], t: Targets, job: Job) -> list[_Prefill]:
    """Per precision and instance size, the prefill candidates that are best on throughput or on TTFT
    floor (lone prompt + KV transfer): every other one is beaten on both, whatever the decode side. Only
    these get a batch curve."""
    hw, model = context(job.system, job.model, job.overrides)
    groups: dict[tuple[str, int], list[tuple[CandidateCost, float, float]]] = {}
    for cost in costs:
        c = cost.candidate
        if c.phase == Phase.PREFILL and cost.feasible:
            transfer = kv_transfer_s(hw, model, t.input_len, c.attention_tp)
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
        best: PlannedDeployment | None = None
        for pre in shortlist:
            if pre.cost.candidate.precision != dec.candidate.precision:
                continue
            sized = size_pools(pre, dec, t)
            if sized and (best is None or sized.output_tok_s_per_chip > best.output_tok_s_per_chip * (1 + TIE_REL)):
                best = sized
        if best is not None:
            deployments.append(best)
    ranked = sorted((d for d in deployments if d.meets_slo), key=lambda d: -d.output_tok_s_per_chip)
    front = pareto_front([(d.tok_s_per_user, d.output_tok_s_per_chip) for d in deployments])
    within = [c for c in costs if c.candidate.phase == Phase.DECODE and c.feasible and c.tpot_s <= t.tpot_slo_s]
    best_decode = max(within, key=lambda c: c.tok_s_per_chip, default=None)
    return Ranking(
        deployments=deployments, ranked=ranked, pareto=[deployments[i] for i in front], best_decode=best_decode
    )
