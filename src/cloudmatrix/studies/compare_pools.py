"""Pricing one system's pools for a comparison (`studies/compare.py`, `studies/compare_afd.py`): the decode and
prefill steps at the conditions, cached per process and per stack-cost override, the batch grid, the busy share,
the KV hand-off, and the figures of prefill and decode pools sized to one request rate."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.stacks import overrides_key, request_fixed_s
from cloudmatrix.cost import comm
from cloudmatrix.deploy import DEFAULT_ATTENTION_TP, Deployment, Eplb, Phase, stated_shared_dies
from cloudmatrix.estimate import Estimate, estimate, matched_output_tok_s_per_chip, pool_req_s
from cloudmatrix.studies.compare_terms import Conditions, SystemResult


def cached_estimate(system: str, model: str, deployment: Deployment) -> Estimate:
    """One step priced once per process (`compare --sweep` walks the same batch grid at every TPOT SLO),
    keyed on the stack-cost overrides in force too."""
    return _priced(system, model, deployment, overrides_key())


@lru_cache(maxsize=4096)
def _priced(system: str, model: str, deployment: Deployment, _overrides: tuple[Any, ...]) -> Estimate:
    return estimate(system, model, deployment)


def decode_at(system: str, c: Conditions, preset: dict[str, Any], batch: float, pool: str = "decode") -> Estimate:
    """The preset's decode instance (or, with ``pool="aggregated"``, its co-located one) at a batch."""
    d = preset[pool]
    return cached_estimate(
        system,
        c.model,
        Deployment(
            phase=Phase.AGGREGATED if pool == "aggregated" else Phase.DECODE,
            num_chips=d["chips"],
            ep=d.get("ep"),
            shared_dies=stated_shared_dies(load_model(c.model), d.get("ep"), d.get("shared_dies")),
            batch_per_chip=batch,
            input_len=c.input_len,
            output_len=c.output_len,
            precision=preset["precision"],
            mtp=c.mtp,
            mtp_acceptance=c.mtp_acceptance,
            eplb=Eplb.DEFAULT,
            stack=c.stack or preset.get("stack"),
        ),
    )


def prefill_at(system: str, c: Conditions, preset: dict[str, Any], tokens_per_chip: int) -> Estimate:
    p = preset["prefill"]
    return cached_estimate(
        system,
        c.model,
        Deployment(
            phase=Phase.PREFILL,
            num_chips=p["chips"],
            ep=p.get("ep"),
            tokens_per_chip=tokens_per_chip,
            input_len=c.input_len,
            precision=preset["precision"],
            eplb=Eplb.DEFAULT,  # what a real system shows: EPLB placed, each batch's routing drifting from it
            microbatch=p.get("microbatch"),
            stack=c.stack or preset.get("stack"),
        ),
    )


def batch_grid(dies_per_chip: int, max_batch: float) -> list[int]:
    """Candidate batches per chip: whole sequences per die, denser at small batch."""
    grid, b = [], dies_per_chip
    while b <= max_batch:
        grid.append(b)
        b += dies_per_chip if b < 16 * dies_per_chip else max(dies_per_chip, (b // 8 // dies_per_chip) * dies_per_chip)
    return grid


def busy_share(est: Estimate) -> float:
    """How loaded a step keeps its chips: its speed-of-light time (each op at peak compute or bandwidth) over
    its real time, at most 1."""
    return min(1.0, est.step.roofline_step_s / est.step.step_s)


def why_line(est: Estimate, label: str) -> str:
    parts = sorted(((us, op) for op, us in est.step.breakdown_us.items() if not op.startswith("mtp.")), reverse=True)
    total = est.step.step_s * 1e6
    top = ", ".join(f"{op} {us / total:.0%}" for us, op in parts[:2])
    return f"{label}: {top}"


def split_pools_result(
    base: dict[str, Any],
    c: Conditions,
    hw: Any,
    batch: float,
    pre: Any,
    dec: Any,
    ttft: float,
    decode_busy: float,
    why: str,
    curve: list,
    **extra: Any,
) -> SystemResult:
    """A disaggregated system's figures, its prefill and decode pools sized to one request rate (the
    prefill pool holds decode_req / (prefill_req + decode_req) of the chips); ``decode_busy`` is the decode
    pool's busy share."""
    prefill_req = pool_req_s(pre.throughput_per_chip_tok_s, c.input_len, "prefill")
    decode_req = pool_req_s(dec.throughput_per_chip_tok_s, c.output_len, "decode")
    per_chip = matched_output_tok_s_per_chip(prefill_req, decode_req, c.output_len)
    per_system = per_chip * hw.system.num_chips
    return SystemResult(
        **base,
        feasible=True,
        batch_per_chip=batch,
        tpot_ms=dec.tpot_s * 1e3,
        ttft_ms=ttft * 1e3,
        prefill_tok_s_per_chip=pre.throughput_per_chip_tok_s,
        decode_tok_s_per_chip=dec.throughput_per_chip_tok_s,
        output_tok_s_per_chip=per_chip,
        output_tok_s_per_system=per_system,
        output_tok_s_per_kw=per_system / hw.system.power_kw.value,
        output_tok_s_per_musd=per_system / (hw.system.price_usd.value / 1e6),
        chips_for_target=math.ceil(c.target_rate_req_s / (per_chip / c.output_len)) if c.target_rate_req_s else None,
        why=why,
        curve=curve,
        utilisation=(decode_req * busy_share(pre) + prefill_req * decode_busy) / (prefill_req + decode_req),
        **extra,
    )


def stack_request_fixed_s(system: str, c: Conditions, preset: dict[str, Any], disaggregated: bool) -> float:
    """The priced stack's fixed time per request (front end, and the hand-off handshake when split)."""
    return request_fixed_s(c.stack or preset.get("stack"), load_hardware(system).chip.family, disaggregated)


def kv_transfer_s(system: str, c: Conditions, preset: dict[str, Any]) -> float:
    """The prompt's KV to decode (striped over its attention TP group's NICs), plus the stack's fixed time."""
    nics = min(DEFAULT_ATTENTION_TP, preset["prefill"]["chips"])
    handoff = comm.kv_handoff_s(load_hardware(system), load_model(c.model), c.input_len, "bf16", nics)
    return handoff + stack_request_fixed_s(system, c, preset, disaggregated=True)
