"""`compare`: the same model, workload and SLO on every system, each with its deployment preset (published
where one exists, flagged `assumed` otherwise), on equal terms (same MTP setting and acceptance, same SLO),
with the reasons visible."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.presets import afd_presets, hardware_id, presets
from cloudmatrix.catalog.stacks import load_stack, not_run_reason
from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError
from cloudmatrix.estimate import Estimate
from cloudmatrix.studies.compare_pools import (
    batch_grid,
    busy_share,
    decode_at,
    kv_transfer_s,
    prefill_at,
    split_pools_result,
    stack_request_fixed_s,
    why_line,
)
from cloudmatrix.studies.compare_terms import Conditions, Progress, SystemResult  # (re-exported)
from cloudmatrix.studies.intervals import COMPARE_METRICS, attach
from cloudmatrix.workload.shape import parse_workload as parse_workload  # (re-exported: callers' old home)


def aggregated_best(
    system: str, c: Conditions, preset: dict[str, Any]
) -> tuple[float, Estimate, list[tuple[float, float]]] | None:
    """Co-located serving: the largest batch whose step (decode batch + the prompt chunk that keeps pace)
    meets the TPOT SLO and, if set, the TTFT SLO, with the co-located curve over every batch (tok/s per
    user, output tok/s per chip). None when nothing fits."""
    if "aggregated" not in preset:
        return None
    hw = load_hardware(system)
    best = None
    curve: list[tuple[float, float]] = []
    try:
        probe = decode_at(system, c, preset, hw.chip.num_dies, "aggregated")
    except InfeasibleDeploymentError:
        return None
    for batch in batch_grid(hw.chip.num_dies, probe.memory.max_batch_per_chip):
        try:
            est = decode_at(system, c, preset, batch, "aggregated")
        except InfeasibleDeploymentError:
            break
        curve.append((1.0 / est.tpot_s, est.throughput_per_chip_tok_s))
        ttft_s = (est.ttft_s or 0.0) + stack_request_fixed_s(system, c, preset, disaggregated=False)
        ttft_ok = c.ttft_slo_ms is None or ttft_s * 1e3 <= c.ttft_slo_ms
        if est.tpot_s * 1e3 <= c.tpot_slo_ms and ttft_ok:
            best = (batch, est)
    return None if best is None else (*best, curve)


def _aggregated_result(
    system: str, c: Conditions, preset: dict[str, Any], batch: float, est: Estimate, base: dict[str, Any]
) -> SystemResult:
    hw = load_hardware(system)
    per_chip = est.throughput_per_chip_tok_s
    per_system = per_chip * hw.system.num_chips
    rate_per_chip = per_chip / c.output_len
    return SystemResult(
        **base,
        mode="aggregated",
        feasible=True,
        batch_per_chip=batch,
        tpot_ms=est.tpot_s * 1e3,
        ttft_ms=((est.ttft_s or 0.0) + stack_request_fixed_s(system, c, preset, disaggregated=False)) * 1e3,
        prefill_tok_s_per_chip=est.prefill_tokens_per_chip_s,
        decode_tok_s_per_chip=per_chip,
        output_tok_s_per_chip=per_chip,
        output_tok_s_per_system=per_system,
        output_tok_s_per_kw=per_system / hw.system.power_kw.value,
        output_tok_s_per_musd=per_system / (hw.system.price_usd.value / 1e6),
        chips_for_target=math.ceil(c.target_rate_req_s / rate_per_chip) if c.target_rate_req_s else None,
        why=why_line(est, "aggregated step"),
        utilisation=busy_share(est),
    )


def compare_system(system: str, c: Conditions) -> SystemResult:
    """The better of the system's disaggregated and co-located (aggregated) presets under the SLO."""
    disagg = disaggregated_result(system, c)
    preset = presets()[system]
    agg = aggregated_best(system, c, preset)
    alternatives = {"disaggregated": disagg.output_tok_s_per_chip if disagg.feasible else 0.0}
    if agg is not None:
        base = dict(
            system=system,
            deployment=f"co-located {preset['aggregated']['chips']} chips",
            precision=preset["precision"],
            assumed_deployment=True,
        )
        batch, est, curve = agg
        agg_result = _aggregated_result(system, c, preset, batch, est, base)
        alternatives["aggregated"] = agg_result.output_tok_s_per_chip
        if agg_result.output_tok_s_per_chip > alternatives["disaggregated"]:
            # its own curve: the co-located step, so the operating point sits on it
            return dataclasses.replace(agg_result, curve=curve, alternatives=alternatives)
    return dataclasses.replace(disagg, alternatives=alternatives)


def disaggregated_result(system: str, c: Conditions) -> SystemResult:
    hw = load_hardware(system)
    preset = presets().get(system)
    if preset is None:
        raise ConfigError(f"no deployment preset for system '{system}'; presets exist for {', '.join(presets())}")
    base = dict(
        system=system,
        deployment=preset["name"],
        precision=preset["precision"],
        assumed_deployment=bool(preset.get("assumed", False)),
    )
    try:
        probe = decode_at(system, c, preset, hw.chip.num_dies)
    except InfeasibleDeploymentError as e:
        return SystemResult(**base, feasible=False, reason=str(e))
    max_batch = probe.memory.max_batch_per_chip
    curve, best = [], None
    for batch in batch_grid(hw.chip.num_dies, max_batch):
        try:
            est = decode_at(system, c, preset, batch)
        except InfeasibleDeploymentError:
            break  # comm buffers grow with the batch: the KV bound from the smallest batch is optimistic
        curve.append((1e3 / (est.tpot_s * 1e3), est.throughput_per_chip_tok_s))
        if est.tpot_s * 1e3 <= c.tpot_slo_ms:
            best = (batch, est)
    if best is None:
        return SystemResult(
            **base,
            feasible=False,
            curve=curve,
            reason=f"TPOT at the smallest batch is {probe.tpot_s * 1e3:.1f} ms > {c.tpot_slo_ms} ms",
        )
    batch, dec = best
    tokens = preset["prefill"]["tokens_per_chip"]
    pre = prefill_at(system, c, preset, tokens)
    ttft = pre.step.step_s + kv_transfer_s(system, c, preset)
    while c.ttft_slo_ms and ttft * 1e3 > c.ttft_slo_ms and tokens > c.input_len // hw.chip.num_dies:
        tokens //= 2  # smaller prefill batches for a tighter TTFT
        pre = prefill_at(system, c, preset, tokens)
        ttft = pre.step.step_s + kv_transfer_s(system, c, preset)
    why = f"{why_line(dec, 'decode')}; {why_line(pre, 'prefill')}"
    return split_pools_result(base, c, hw, batch, pre, dec, ttft, busy_share(dec), why, curve)


def compare(systems: list[str], c: Conditions, progress: Progress | None = None) -> list[SystemResult]:
    """Every system's result in the order given; ``progress(done, total)`` after each."""
    load_model(c.model)  # fail early on an unknown model
    if c.stack is not None:
        load_stack(c.stack)  # ... and on an unknown stack
    results: list[SystemResult] = []
    for s in systems:
        if progress is not None:
            progress(len(results), len(systems))
        refusal = _not_run(s, c.stack)
        if refusal is not None:
            results.append(refusal)
            continue
        if s in afd_presets():  # an AFD preset (studies/compare_afd.py): no measurement gives it an interval
            from cloudmatrix.studies.compare_afd import afd_result

            results.append(afd_result(s, c))
            continue
        try:
            r = dataclasses.replace(compare_system(s, c), stack=c.stack or presets().get(s, {}).get("stack"))
            if r.feasible:
                query = {"model": c.model, "weights": r.precision, "isl": c.input_len}
                ivs = attach(r.to_dict(), s, COMPARE_METRICS, c.stack, query)["intervals"]
                r = dataclasses.replace(r, intervals=ivs)
            results.append(r)
        except InfeasibleDeploymentError as e:
            results.append(SystemResult(system=s, deployment="", precision="", feasible=False, reason=str(e)))
    return results


def _not_run(system: str, stack: str | None) -> SystemResult | None:
    """A system the asked-for stack has no build for, marked rather than priced (or failing the others)."""
    hw = load_hardware(hardware_id(system))
    reason = None if stack is None else not_run_reason(stack, hw.system.vendor, system)
    if reason is None:
        return None
    preset = presets().get(system, {})
    return SystemResult(
        system=system,
        deployment=str(preset.get("name", "")),
        precision=str(preset.get("precision", "")),
        feasible=False,
        not_run=True,
        reason=f"not run: {reason}",
        stack=stack,
    )


def compare_dict(
    systems: list[str], c: Conditions, progress: Progress | None = None
) -> tuple[list[SystemResult], dict[str, Any]]:
    """The results and the ``compare --json`` object (the report embeds the same object)."""
    results = compare(systems, c, progress)
    return results, {
        "model": c.model,
        "workload": {"input_len": c.input_len, "output_len": c.output_len},
        "tpot_slo_ms": c.tpot_slo_ms,
        "ttft_slo_ms": c.ttft_slo_ms,
        "stack": c.stack,
        "systems": [r.to_dict() for r in results],
    }


def operating_estimate(r: SystemResult, c: Conditions) -> Estimate:
    """The decode (or co-located) step a feasible result runs at: the one its TPOT and breakdown come from."""
    preset = presets()[r.system]
    pool = "aggregated" if r.mode == "aggregated" else "decode"
    return decode_at(r.system, c, preset, r.batch_per_chip, pool)
