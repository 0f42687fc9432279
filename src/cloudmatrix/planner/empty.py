"""Why a search found no deployment within the SLOs, in one line with the numbers: the chip budget, the HBM
of a die, the estimate's refusals, the fastest decode TPOT, the lowest prefill TTFT or the pairing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.cost import comm
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.deploy import Phase, plan
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.planner.evaluate import CandidateCost, Job
from cloudmatrix.planner.inputs import PlanWorkload
from cloudmatrix.planner.rank import KV_PRECISION, Ranking, Targets
from cloudmatrix.planner.space import Candidate, error_reason
from cloudmatrix.units import GB_DECIMAL


@dataclass(frozen=True, kw_only=True)
class Searched:
    """Everything a search saw: what the result reports, and what explains an empty one."""

    hw: Hardware
    model: ModelSpec
    workload: PlanWorkload
    t: Targets
    job: Job
    sizes: dict[Phase, tuple[int, ...]]  # chips per instance of each role
    everything: Sequence[Candidate]
    kept: Sequence[Candidate]
    pruned: Counter[str]  # how many candidates each prune check removed
    costs: Sequence[CandidateCost]
    ranking: Ranking


def why_empty(s: Searched) -> str:
    """The first reason, in the order the search met it, that no deployment meets both SLOs ("" if some does)."""
    if s.ranking.ranked:
        return ""
    steps: tuple[Callable[[Searched], str], ...] = (_chips, _pruned, _refused, _tpot, _ttft, _pairing)
    for step in steps:
        reason = step(s)
        if reason:
            return reason
    return "no deployment meets both SLOs"


def _chips(s: Searched) -> str:
    for role in Phase.PREFILL, Phase.DECODE:
        if not s.sizes[role]:
            return f"no {role.value} instance size fits the {s.hw.system.num_chips}-chip system"
    smallest_p, smallest_d = min(s.sizes[Phase.PREFILL]), min(s.sizes[Phase.DECODE])
    if smallest_p + smallest_d > s.t.budget_chips:
        return (
            f"smallest prefill+decode pair needs {smallest_p} + {smallest_d} = {smallest_p + smallest_d} chips "
            f"> {s.t.budget_chips}"
        )
    return ""


def _min_memory_gb(s: Searched, role: Phase) -> float | None:
    """The least HBM per die any candidate of ``role`` needs (None: none could be planned)."""
    need = []
    for c in s.everything:
        if c.phase == role and c.chips <= s.t.budget_chips:
            try:
                p = plan(c.deployment(s.job.input_len, s.job.output_len, 0.0), s.hw, s.model)
            except CloudMatrixError:
                continue
            need.append(memory_use(p).total_bytes / GB_DECIMAL)
    return min(need, default=None)


def _pruned(s: Searched) -> str:
    """Roles left without a candidate after pruning: HBM with the numbers, else the prune reasons."""
    reasons = []
    hbm_gb = s.hw.chip.hbm_bytes_per_die / GB_DECIMAL
    for role in Phase.DECODE, Phase.PREFILL:
        if any(c.phase == role for c in s.kept):
            continue
        need_gb = _min_memory_gb(s, role)
        if need_gb is not None and need_gb > hbm_gb:
            why = (
                f"every {role.value} candidate needs more HBM per die than the chip has: "
                f"{need_gb:,.1f} GB > {hbm_gb:,.1f} GB"
            )
            if s.model.moe is None:
                why += " even at the largest tensor-parallel group searched"
            reasons.append(why)
        else:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(s.pruned.items()))
            reasons.append(f"no {role.value} candidate survives pruning (pruned: {counts})")
    return "; ".join(reasons)


def _refused(s: Searched) -> str:
    for role in Phase.DECODE, Phase.PREFILL:
        mine = [c for c in s.costs if c.candidate.phase == role]
        if mine and not any(c.feasible for c in mine):
            (reason, n), *_ = Counter(error_reason(c.reason) for c in mine).most_common(1)
            return f"the estimate refused every {role.value} candidate, {n} of {len(mine)} with: {reason}"
    return ""


def _tpot(s: Searched) -> str:
    decode = [c.tpot_s for c in s.costs if c.candidate.phase == Phase.DECODE and c.feasible]
    if decode and min(decode) > s.t.tpot_slo_s:
        return f"fastest decode candidate has TPOT {min(decode) * 1e3:,.1f} ms > {s.t.tpot_slo_s * 1e3:g} ms"
    return ""


def _ttft(s: Searched) -> str:
    """No pairing within the TTFT SLO: the lowest TTFT any prefill instance could give (one prompt alone
    plus the KV hand-off), against the SLO."""
    if s.ranking.deployments:
        return ""
    floors = [
        c.lone_prompt_s + comm.kv_handoff_s(s.hw, s.model, s.job.input_len, KV_PRECISION, c.candidate.kv_group)
        for c in s.costs
        if c.candidate.phase == Phase.PREFILL and c.feasible
    ]
    slo_ms, floor_ms = s.t.ttft_slo_s * 1e3, min(floors, default=0.0) * 1e3
    if floor_ms > slo_ms:
        return f"fastest prefill candidate has TTFT {floor_ms:,.0f} ms (one prompt alone + KV hand-off) > {slo_ms:g} ms"
    return (
        f"no prefill pool within {s.t.budget_chips} chips keeps the mean TTFT within {slo_ms:g} ms at "
        f"{s.t.utilisation:.0%} load (lowest floor {floor_ms:,.0f} ms)"
    )


def _pairing(s: Searched) -> str:
    fastest_ms = min(d.tpot_s for d in s.ranking.deployments) * 1e3
    return (
        f"decode instances that pair within the TTFT SLO and {s.t.budget_chips} chips have TPOT "
        f"{fastest_ms:,.1f} ms or more > {s.t.tpot_slo_s * 1e3:g} ms"
    )
