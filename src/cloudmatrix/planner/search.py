"""The planner end to end: enumerate and prune, cost on the fast path (in process or on Ray), rank with
rate matching, and check the best deployments in simulation. No printing and no clock: the CLI times it."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.catalog.stacks import check_runs_on, load_stack
from cloudmatrix.inputs import check_number
from cloudmatrix.planner.check import Check, check
from cloudmatrix.planner.empty import Searched, why_empty
from cloudmatrix.planner.evaluate import CandidateCost, Job, cost_candidates, job_for
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload, context, parse_workload, resolved_model
from cloudmatrix.planner.rank import PlannedDeployment, Ranking, operating_tpot_s, rank, targets_for
from cloudmatrix.planner.space import Candidate, error_reason, feasible_candidates, role_sizes

Progress = Callable[[int, int], None]
CostExecutor = Callable[[Job, Sequence[Candidate], Progress | None], list[CandidateCost]]
CheckExecutor = Callable[[Sequence[PlannedDeployment]], list[Check]]


@dataclass(frozen=True, kw_only=True)
class SearchStats:
    enumerated: int
    pruned: dict[str, int]
    costed: int
    infeasible: int  # costed, yet the estimate refused them
    infeasible_reasons: dict[str, int]  # how many of those each kind of refusal accounts for


@dataclass(frozen=True, kw_only=True)
class PlanResult:
    request: PlanRequest
    workload: PlanWorkload
    hardware_id: str
    budget_chips: int
    stats: SearchStats
    ranking: Ranking
    operating_tpot_s: list[float] = field(default_factory=list)  # per listed deployment, at the planned rate
    why_empty: str = ""  # why no deployment meets the SLOs ("" when some does)
    checks: list[Check] = field(default_factory=list)  # one per listed deployment, when checked
    check_note: str = ""

    @property
    def listed(self) -> list[PlannedDeployment]:
        return self.ranking.ranked[: self.request.top]

    def to_dict(self) -> dict[str, Any]:
        r, w = self.request, self.workload
        index = {id(d): i for i, d in enumerate(self.ranking.deployments)}
        return {
            "system": self.hardware_id,
            "model": r.model,
            "stack": r.stack or default_stack(r.system),
            "workload": {"name": w.name, "input_len": w.input_len, "output_len": w.output_len},
            "ttft_slo_ms": r.ttft_slo_ms,
            "tpot_slo_ms": r.tpot_slo_ms,
            "chips": self.budget_chips,
            "utilisation": r.utilisation,
            "mtp_acceptance": r.mtp_acceptance,
            "hardware_overrides": list(r.hardware_overrides),
            "search": {
                **self.stats.__dict__,
                "deployments": len(self.ranking.deployments),
                "meeting_slo": len(self.ranking.ranked),
            },
            "best_decode": _decode_dict(self.ranking.best_decode) if self.ranking.best_decode else None,
            "ranked": self._ranked_rows(index),
            "why_empty": self.why_empty,
            # each front point is the whole deployment; `deployment` indexes the search's deployments
            "pareto": [{"deployment": index[id(d)], **d.to_dict()} for d in self.ranking.pareto],
            "check_note": self.check_note,
        }

    def _ranked_rows(self, index: dict[int, int]) -> list[dict[str, Any]]:
        rows = []
        for i, d in enumerate(self.listed):
            row = {"rank": i + 1, "deployment": index[id(d)], **d.to_dict()}
            row["tpot_operating_ms"] = self.operating_tpot_s[i] * 1e3 if i < len(self.operating_tpot_s) else None
            row["check"] = self.checks[i].to_dict() if i < len(self.checks) else None
            rows.append(row)
        return rows


def _decode_dict(c: CandidateCost) -> dict[str, Any]:
    k = c.candidate
    return {
        "label": k.label(),
        "precision": k.precision,
        "chips": k.chips,
        "ep": k.ep,
        "batch_per_chip": k.batch_per_chip,
        "mtp": k.mtp,
        "tp": k.tp,
        "microbatch": k.microbatch,
        "tok_s_per_chip": c.tok_s_per_chip,
        "tpot_ms": c.tpot_s * 1e3,
    }


def _budget(request: PlanRequest, hw: Hardware) -> int:
    """The chip budget, with the request's other numbers checked before anything is costed."""
    system_chips = hw.system.num_chips
    budget = request.chips if request.chips is not None else system_chips
    check_number("--chips", budget, lo=1, hi=system_chips, integer=True)
    check_number("--ttft-slo (ms)", request.ttft_slo_ms, lo=0, lo_open=True, hi=1e7)
    check_number("--tpot-slo (ms)", request.tpot_slo_ms, lo=0, lo_open=True, hi=1e6)
    if request.stack is not None:
        load_stack(request.stack)  # an unknown stack fails before any costing, naming the known ones
        check_runs_on(request.stack, hw.system.vendor, hw.system.id)  # ... as does one without a build for it
    check_number("--mtp-acceptance", request.mtp_acceptance, lo=0, hi=1)
    check_number("--load", request.utilisation, lo=0, lo_open=True, hi=1, hi_open=True)
    check_number("--top", request.top, lo=1, hi=1000, integer=True)
    return budget


def _stats(s: Searched) -> SearchStats:
    refused = Counter(error_reason(c.reason) for c in s.costs if not c.feasible)
    return SearchStats(
        enumerated=len(s.everything),
        pruned=dict(sorted(s.pruned.items())),
        costed=len(s.costs),
        infeasible=sum(refused.values()),
        infeasible_reasons=dict(sorted(refused.items())),
    )


def run_search(request: PlanRequest, progress: Progress | None = None, cost: CostExecutor | None = None) -> Searched:
    """Enumerate, prune, cost and rank for a request whose model path is already resolved."""
    w = parse_workload(request.workload)
    hw, model = context(request.system, request.model, request.hardware_overrides)
    t = targets_for(request, w, _budget(request, hw))
    job = job_for(request, w)
    everything, kept, pruned = feasible_candidates(
        hw, model, request.space, t.budget_chips, job.input_len, job.output_len
    )
    costs = (cost or cost_candidates)(job, kept, progress)
    return Searched(
        hw=hw,
        model=model,
        workload=w,
        t=t,
        job=job,
        sizes=role_sizes(hw, request.space),
        everything=everything,
        kept=kept,
        pruned=pruned,
        costs=costs,
        ranking=rank(costs, t, job),
    )


def fast_path(request: PlanRequest, progress: Progress | None = None, cost: CostExecutor | None = None) -> PlanResult:
    """Everything but the simulation checks."""
    request = dataclasses.replace(request, model=resolved_model(request.model))  # once, before any worker
    s = run_search(request, progress, cost)
    return PlanResult(
        request=request,
        workload=s.workload,
        hardware_id=s.hw.system.id,
        budget_chips=s.t.budget_chips,
        stats=_stats(s),
        ranking=s.ranking,
        operating_tpot_s=[operating_tpot_s(d, s.t, s.job) for d in s.ranking.ranked[: request.top]],
        why_empty=why_empty(s),
    )


def check_path(result: PlanResult, run: CheckExecutor | None = None) -> PlanResult:
    """The listed deployments re-run in the simulation (skipped under hardware overrides, which a
    scenario cannot carry)."""
    if result.request.hardware_overrides:
        note = "simulation checks skipped: scenarios run on catalog hardware, and --set overrides are analytic only"
        return dataclasses.replace(result, check_note=note)
    checks = (run or CheckChunk(result.workload, result.request))(result.listed)
    return dataclasses.replace(result, checks=checks)


class CheckChunk:
    """A picklable ``deployments -> checks`` function (also what a Ray task runs)."""

    def __init__(self, workload: PlanWorkload, request: PlanRequest) -> None:
        self.workload, self.request = workload, request

    def __call__(self, deployments: Sequence[PlannedDeployment]) -> list[Check]:
        return [check(d, self.workload, self.request) for d in deployments]
