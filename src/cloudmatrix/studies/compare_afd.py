"""`compare` on an attention-FFN disaggregated preset (``catalog/data/presets/afd.yaml``): its decode
instance as an AFD attention pool and FFN pool, at the largest attention batch that meets the TPOT SLO,
beside the same prefill instances as its base system's published preset. No AFD measurement validates
it, so its intervals are unknown."""

from __future__ import annotations

from typing import Any

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.presets import afd_presets, presets
from cloudmatrix.cost.afd_result import AfdEstimate, estimate_afd
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.deployment import AfdDeployment
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.studies.compare_pools import batch_grid, kv_transfer_s, prefill_at, split_pools_result
from cloudmatrix.studies.compare_terms import Conditions, SystemResult

NO_BASIS = "no AFD measurement validates this deployment: its intervals are unknown"


def afd_deployment(name: str, c: Conditions, batch: float) -> AfdDeployment:
    """The preset's AFD decode instance at ``batch`` sequences per attention chip."""
    preset = afd_presets()[name]
    d = preset["decode"]
    attention = Deployment(
        phase=Phase.DECODE,
        num_chips=d["attention_chips"],
        batch_per_chip=batch,
        input_len=c.input_len,
        output_len=c.output_len,
        precision=preset["precision"],
        mtp=c.mtp,
        mtp_acceptance=c.mtp_acceptance if c.mtp else 0.0,
        eplb=Eplb.DEFAULT,
        stack=c.stack or preset.get("stack"),
    )
    return AfdDeployment(
        attention=attention,
        ffn_chips=d["ffn_chips"],
        ffn_ep=d.get("ffn_ep"),
        ffn_precision=d.get("ffn_precision"),
        microbatches=d.get("microbatches", 2),
    )


def _best(name: str, c: Conditions, dies_per_chip: int) -> tuple[list[tuple[float, float]], Any]:
    """The curve over the attention batches KV allows, and the largest batch within the TPOT SLO."""
    probe = estimate_afd(afd_presets()[name]["system"], c.model, afd_deployment(name, c, 2 * dies_per_chip))
    curve: list[tuple[float, float]] = []
    best: tuple[float, AfdEstimate] | None = None
    for batch in batch_grid(dies_per_chip, probe.attention_memory.max_batch_per_chip):
        try:
            est = estimate_afd(afd_presets()[name]["system"], c.model, afd_deployment(name, c, batch))
        except InfeasibleDeploymentError:
            break
        curve.append((1.0 / est.tpot_s, est.throughput_per_chip_tok_s))
        if est.tpot_s * 1e3 <= c.tpot_slo_ms:
            best = (batch, est)
    return curve, (best, probe)


def afd_result(name: str, c: Conditions) -> SystemResult:
    """The AFD preset under the SLO, its prefill pool sized to match as `compare` sizes every system's."""
    preset = afd_presets()[name]
    system = preset["system"]
    hw = load_hardware(system)
    base = dict(system=name, deployment=preset["name"], precision=preset["precision"], assumed_deployment=True)
    try:
        curve, (best, probe) = _best(name, c, hw.chip.num_dies)
    except InfeasibleDeploymentError as e:
        return SystemResult(**base, feasible=False, reason=str(e))
    if best is None:
        reason = f"TPOT at the smallest batch is {probe.tpot_s * 1e3:.1f} ms > {c.tpot_slo_ms} ms"
        return SystemResult(**base, feasible=False, curve=curve, reason=reason)
    batch, dec = best
    published = presets()[system]
    pre = prefill_at(system, c, published, published["prefill"]["tokens_per_chip"])
    ttft = pre.step.step_s + kv_transfer_s(system, c, published)
    util = dec.step.utilisation()
    afd = dec.afd
    decode_busy = (afd.attention.num_chips * util["attention"] + afd.ffn_chips * util["ffn"]) / afd.num_chips
    why = f"AFD decode: attention busy {util['attention']:.0%}, FFN busy {util['ffn']:.0%} of the step; {NO_BASIS}"
    # the AFD pools' busy share is their chip-weighted one
    return split_pools_result(
        base, c, hw, batch, pre, dec, ttft, decode_busy, why, curve, stack=c.stack or preset.get("stack")
    )
