"""The planner end to end: enumerate and prune, cost on the fast path (in process or on Ray), rank with
rate matching, and check the best deployments in simulation. No printing and no clock: the CLI times it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudmatrix.errors import ConfigError
from cloudmatrix.planner.check import Check, check
from cloudmatrix.planner.evaluate import CandidateCost, Job, cost_candidates
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload, context, parse_workload
from cloudmatrix.planner.rank import PlannedDeployment, Ranking, Targets, rank
from cloudmatrix.planner.space import Candidate, feasible_candidates

Progress = Callable[[int, int], None]
CostExecutor = Callable[[Job, Sequence[Candidate], Progress | None], list[CandidateCost]]
CheckExecutor = Callable[[Sequence[PlannedDeployment]], list[Check]]


@dataclass(frozen=True, kw_only=True)
class SearchStats:
    enumerated: int
    pruned: dict[str, int]
    costed: int
    infeasible: int  # costed, yet the estimate refused them


@dataclass(frozen=True, kw_only=True)
class PlanResult:
    request: PlanRequest
    workload: PlanWorkload
    hardware_id: str
    budget_chips: int
    stats: SearchStats
    ranking: Ranking
    checks: list[Check] = field(default_factory=list)  # one per listed deployment, when checked
    check_note: str = ""

    @property
    def listed(self) -> list[PlannedDeployment]:
        return self.ranking.ranked[: self.request.top]

    def to_dict(self) -> dict[str, Any]:
        r, w = self.request, self.workload
        ranked = []
        for i, d in enumerate(self.listed):
            row = {"rank": i + 1, **d.to_dict()}
            row["check"] = self.checks[i].to_dict() if i < len(self.checks) else None
            ranked.append(row)
        best = self.ranking.best_decode
        return {
            "system": self.hardware_id,
            "model": r.model,
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
            "best_decode": _decode_dict(best) if best else None,
            "ranked": ranked,
            "pareto": [
                {
                    "tok_s_per_user": d.tok_s_per_user,
                    "output_tok_s_per_chip": d.output_tok_s_per_chip,
                    "tpot_ms": d.tpot_s * 1e3,
                    "decode": d.decode.candidate.label(),
                    "meets_slo": d.meets_slo,
                }
                for d in self.ranking.pareto
            ],
            "check_note": self.check_note,
        }


def _decode_dict(c: CandidateCost) -> dict[str, Any]:
    k = c.candidate
    return {
        "label": k.label(),
        "precision": k.precision,
        "chips": k.chips,
        "ep": k.ep,
        "batch_per_chip": k.batch_per_chip,
        "mtp": k.mtp,
        "microbatch": k.microbatch,
        "tok_s_per_chip": c.tok_s_per_chip,
        "tpot_ms": c.tpot_s * 1e3,
    }


def _local_cost(job: Job, candidates: Sequence[Candidate], progress: Progress | None) -> list[CandidateCost]:
    return cost_candidates(job, candidates, progress)


def _targets(request: PlanRequest, w: PlanWorkload, system_chips: int) -> Targets:
    budget = request.chips or system_chips
    if not 1 <= budget <= system_chips:
        raise ConfigError(f"--chips {budget} must be between 1 and the system's {system_chips} chips")
    if not 0 < request.utilisation < 1:
        raise ConfigError(f"utilisation {request.utilisation} must be between 0 and 1 (exclusive)")
    return Targets(
        input_len=w.input_len,
        output_len=w.output_len,
        ttft_slo_s=request.ttft_slo_ms / 1e3,
        tpot_slo_s=request.tpot_slo_ms / 1e3,
        budget_chips=budget,
        utilisation=request.utilisation,
    )


def fast_path(request: PlanRequest, progress: Progress | None = None, cost: CostExecutor | None = None) -> PlanResult:
    """Everything but the simulation checks."""
    w = parse_workload(request.workload)
    hw, model = context(request.system, request.model, request.hardware_overrides)
    t = _targets(request, w, hw.system.num_chips)
    inp, outp = round(w.input_len), round(w.output_len)
    everything, kept, pruned = feasible_candidates(hw, model, request.space, t.budget_chips, inp, outp)
    job = Job(
        system=request.system,
        model=request.model,
        overrides=request.hardware_overrides,
        input_len=inp,
        output_len=outp,
        mtp_acceptance=request.mtp_acceptance,
    )
    costs = (cost or _local_cost)(job, kept, progress)
    stats = SearchStats(
        enumerated=len(everything),
        pruned=dict(sorted(pruned.items())),
        costed=len(costs),
        infeasible=sum(not c.feasible for c in costs),
    )
    return PlanResult(
        request=request,
        workload=w,
        hardware_id=hw.system.id,
        budget_chips=t.budget_chips,
        stats=stats,
        ranking=rank(costs, t, job),
    )


def check_path(result: PlanResult, run: CheckExecutor | None = None) -> PlanResult:
    """The listed deployments re-run in the simulation (skipped under hardware overrides, which a
    scenario cannot carry)."""
    if result.request.hardware_overrides:
        note = "simulation checks skipped: scenarios run on catalog hardware, and --set overrides are analytic only"
        return PlanResult(**{**result.__dict__, "check_note": note})
    checks = (run or _local_checks(result))(result.listed)
    return PlanResult(**{**result.__dict__, "checks": checks})


def _local_checks(result: PlanResult) -> CheckExecutor:
    return CheckChunk(result.workload, result.request)


class CheckChunk:
    """A picklable ``deployments -> checks`` function (also what a Ray task runs)."""

    def __init__(self, workload: PlanWorkload, request: PlanRequest) -> None:
        self.workload, self.request = workload, request

    def __call__(self, deployments: Sequence[PlannedDeployment]) -> list[Check]:
        return [check(d, self.workload, self.request) for d in deployments]
