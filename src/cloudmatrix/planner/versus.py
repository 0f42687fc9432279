"""`plan` beside `compare`: the system's published preset priced as `compare` prices it under the plan's
conditions, and the plan's rank 1 on the same terms (pools in proportion at full load, the one function
both use), so the two commands' figures meet and a difference is named: a better deployment found, or a
cap of the search (batch, precision, chips) that keeps it from the preset's."""

from __future__ import annotations

from typing import Any

from cloudmatrix.catalog.presets import presets
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import matched_output_tok_s_per_chip, pool_req_s
from cloudmatrix.planner.rank import PlannedDeployment
from cloudmatrix.planner.search import PlanResult
from cloudmatrix.planner.space import NATIVE_PRECISIONS
from cloudmatrix.studies.compare import Conditions, SystemResult, compare_system

SAME_REL = 0.005  # within this, the plan found the preset's figure (rounding, not a different deployment)


def on_compare_terms(d: PlannedDeployment, input_len: float, output_len: float) -> float:
    """A planned deployment's output tok/s per chip as `compare` states one: pools in proportion, full load."""
    prefill = pool_req_s(d.prefill.tok_s_per_chip, input_len, "prefill")
    decode = pool_req_s(d.decode.tok_s_per_chip, output_len, "decode")
    return matched_output_tok_s_per_chip(prefill, decode, output_len)


def versus_preset(result: PlanResult) -> dict[str, Any] | None:
    """The preset beside rank 1 (None without a preset, overrides, a ranked deployment or a feasible preset
    to set beside it)."""
    r, w = result.request, result.workload
    if r.system not in presets() or r.hardware_overrides or not result.listed or w.spec.trace:
        return None
    cond = Conditions(
        model=r.model,
        input_len=round(w.input_len),
        output_len=round(w.output_len),
        tpot_slo_ms=r.tpot_slo_ms,
        ttft_slo_ms=r.ttft_slo_ms,
        mtp_acceptance=r.mtp_acceptance,
        stack=r.stack,
    )
    try:
        preset = compare_system(r.system, cond)
    except CloudMatrixError:
        return None
    if not preset.feasible:
        return None
    best = result.listed[0]
    same_terms = on_compare_terms(best, w.input_len, w.output_len)
    return {
        "preset": preset.deployment,
        "preset_mode": preset.mode,
        "compare_output_tok_s_per_chip": preset.output_tok_s_per_chip,
        "plan_output_tok_s_per_chip_compare_terms": same_terms,
        "plan_output_tok_s_per_chip": best.output_tok_s_per_chip,
        "line": _line(preset, best, same_terms, result),
    }


def _line(preset: SystemResult, best: PlannedDeployment, same_terms: float, result: PlanResult) -> str:
    ratio = same_terms / preset.output_tok_s_per_chip
    load = result.request.utilisation
    head = (
        f"vs compare: preset {preset.deployment} ({preset.precision}, b{preset.batch_per_chip:g}) "
        f"{preset.output_tok_s_per_chip:,.0f} out tok/s/chip; #1 {same_terms:,.0f} on compare's terms "
        f"({ratio - 1:+.0%}), {best.output_tok_s_per_chip:,.0f} as planned ({load:.0%} load, whole instances)"
    )
    if abs(ratio - 1) <= SAME_REL:
        return head + ": the same"
    if ratio > 1:
        return head + f": the search found a better deployment than the preset ({_differences(preset, best)})"
    return head + f": {_caps(preset, best, result) or 'the preset is better on these terms'}"


def _differences(preset: SystemResult, best: PlannedDeployment) -> str:
    c = best.decode.candidate
    parts = [] if c.precision == preset.precision else [f"{c.precision} for {preset.precision}"]
    if preset.mode == "aggregated":
        parts.append("disaggregated for co-located")
    elif c.batch_per_chip != preset.batch_per_chip:
        parts.append(f"decode batch {c.batch_per_chip} for {preset.batch_per_chip:g}")
    parts.append(f"decode {c.chips} chips {f'EP{c.ep}' if c.ep else 'dense'}, MTP {c.mtp}")
    return "; ".join(parts)


def _caps(preset: SystemResult, best: PlannedDeployment, result: PlanResult) -> str:
    """What of the search keeps it from the preset's deployment."""
    space, r = result.request.space, result.request
    caps = []
    if preset.mode == "disaggregated" and preset.batch_per_chip > max(space.batches_per_chip):
        caps.append(f"the search's decode batch stops at {max(space.batches_per_chip)} per chip")
    if space.precisions is not None and preset.precision not in space.precisions:
        caps.append(f"--precision leaves out the preset's {preset.precision}")
    elif preset.precision not in NATIVE_PRECISIONS:
        caps.append(f"the search has no {preset.precision}")
    if r.chips is not None:
        caps.append(f"the chip budget is {r.chips}")
    if preset.mode == "aggregated":
        caps.append("the planner searches disaggregated deployments only")
    if not caps and _binding(best, result) == "prefill":
        caps.append(
            f"in whole instances within {best.chips} chips prefill binds, so a larger decode batch adds nothing "
            "as planned and the lower TPOT ranks first"
        )
    return "; ".join(caps)


def _binding(d: PlannedDeployment, result: PlanResult) -> str:
    """The pool that sets a planned deployment's rate."""
    w = result.workload
    prefill = d.prefill_instances * pool_req_s(
        d.prefill.tok_s_per_chip * d.prefill.candidate.chips, w.input_len, "prefill"
    )
    decode = d.decode_instances * pool_req_s(d.decode.tok_s_per_chip * d.decode.candidate.chips, w.output_len, "decode")
    return "prefill" if prefill <= decode else "decode"
