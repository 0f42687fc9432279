"""Where each side of a pair wins: `compare --sweep`. The pair's ratios A / B (output tok/s per system, per
chip, per kW) over a grid of input lengths (1K to 128K) and TPOT SLOs (20 to 100 ms) at one output length,
each cell priced exactly as `compare` prices it (``compare_system``). Cells whose prompt and output exceed
the model's context, or where a side meets no SLO, are marked rather than drawn. Every TPOT SLO walks the
same decode batch grid, so after the first SLO of an input length every step comes from compare's cache."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.stacks import load_stack, not_run_reason
from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError
from cloudmatrix.inputs import check_number
from cloudmatrix.studies.compare import Conditions, SystemResult, compare_system

ISL_GRID = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
TPOT_GRID_MS = (20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
# (compare figure, panel title): the three heat maps
PANELS = (
    ("output_tok_s_per_system", "per system"),
    ("output_tok_s_per_chip", "per chip"),
    ("output_tok_s_per_kw", "per kW"),
)
OVER_CONTEXT = "over context"


@dataclass(frozen=True, kw_only=True)
class SweepRequest:
    pair: tuple[str, str]
    model: str = "deepseek-r1"
    output_len: int = 1024
    ttft_slo_ms: float | None = None
    mtp: int = 1
    mtp_acceptance: float = 0.7
    stack: str | None = None
    input_lens: tuple[int, ...] = ISL_GRID
    tpot_slos_ms: tuple[float, ...] = TPOT_GRID_MS

    def __post_init__(self) -> None:
        check_number("osl (--osl, tokens)", self.output_len, lo=1, hi=1_000_000, integer=True)


def _cell(req: SweepRequest, isl: int, tpot: float, hws: dict[str, Hardware]) -> dict[str, Any]:
    """One grid cell: both sides priced as `compare` prices them, the three ratios, or why there are none."""
    results: dict[str, SystemResult | None] = {}
    reasons: dict[str, str] = {}
    for side in req.pair:
        cond = Conditions(model=req.model, input_len=isl, output_len=req.output_len, tpot_slo_ms=tpot,
                          ttft_slo_ms=req.ttft_slo_ms, mtp=req.mtp, mtp_acceptance=req.mtp_acceptance,
                          stack=req.stack)  # fmt: skip
        try:
            r = compare_system(side, cond)
        except InfeasibleDeploymentError as e:
            r = SystemResult(system=side, deployment="", precision="", feasible=False, reason=str(e))
        results[side] = r if r.feasible else None
        if not r.feasible:
            reasons[side] = r.reason
    cell: dict[str, Any] = {"input_len": isl, "tpot_slo_ms": tpot, "status": "ok", "ratios": {}, "reasons": reasons}
    if reasons:
        cell["status"] = "infeasible: " + ", ".join(reasons)
        return cell
    a, b = (results[s] for s in req.pair)
    assert a is not None and b is not None
    for key, _ in PANELS:
        va, vb = _figure(a, hws[a.system], key), _figure(b, hws[b.system], key)
        cell["ratios"][key] = va / vb if vb > 0 else None
        cell[key] = {a.system: va, b.system: vb}
    return cell


def _figure(r: SystemResult, hw: Hardware, key: str) -> float:
    """A compare figure, per kW on the (possibly overridden) catalog power."""
    if key == "output_tok_s_per_kw":
        return r.output_tok_s_per_system / hw.system.power_kw.value
    return float(getattr(r, key))


def sweep(req: SweepRequest, hws: dict[str, Hardware]) -> dict[str, Any]:
    """The grid, input length outermost (each length's TPOT SLOs share its cached steps)."""
    spec = load_model(req.model)
    if req.pair[0] == req.pair[1]:
        raise ConfigError("--versus: a sweep needs two different systems")
    if req.stack is not None:
        load_stack(req.stack)  # an unknown stack fails once, not as every cell
        for side in req.pair:
            reason = not_run_reason(req.stack, hws[side].system.vendor, side)
            if reason is not None:
                raise ConfigError(f"--stack {req.stack}: not run on {side}: {reason}")
    cells = []
    for isl in req.input_lens:
        for tpot in req.tpot_slos_ms:
            if spec.max_context is not None and isl + req.output_len > spec.max_context:
                cells.append({"input_len": isl, "tpot_slo_ms": tpot, "status": OVER_CONTEXT, "ratios": {},
                              "reasons": {}})  # fmt: skip
                continue
            cells.append(_cell(req, isl, tpot, hws))
    return {
        "a": req.pair[0],
        "b": req.pair[1],
        "model": req.model,
        "output_len": req.output_len,
        "ttft_slo_ms": req.ttft_slo_ms,
        "max_context": spec.max_context,
        "input_lens": list(req.input_lens),
        "tpot_slos_ms": list(req.tpot_slos_ms),
        "panels": [{"key": k, "title": t} for k, t in PANELS],
        "cells": cells,
    }


def grid(d: dict[str, Any], key: str) -> list[list[float | None]]:
    """One panel's ratios as rows of TPOT SLO by columns of input length (None where not drawn)."""
    at = {(c["input_len"], c["tpot_slo_ms"]): c["ratios"].get(key) for c in d["cells"]}
    return [[at.get((isl, t)) for isl in d["input_lens"]] for t in d["tpot_slos_ms"]]


def marks(d: dict[str, Any]) -> list[list[str]]:
    """Per cell: "" when drawn, "ctx" beyond the model's context, else the side(s) that meet no SLO."""

    def mark(c: dict[str, Any]) -> str:
        if c["status"] == "ok":
            return ""
        if c["status"] == OVER_CONTEXT:
            return "ctx"
        return "x " + "+".join(("A" if s == d["a"] else "B") for s in c["reasons"])

    at = {(c["input_len"], c["tpot_slo_ms"]): mark(c) for c in d["cells"]}
    return [[at[(isl, t)] for isl in d["input_lens"]] for t in d["tpot_slos_ms"]]


def length_label(n: int) -> str:
    """An input length as the axes show it: 4K for 4,096."""
    return f"{n // 1024}K" if n % 1024 == 0 else f"{n:,}"


def log2_limit(d: dict[str, Any]) -> float:
    """One colour scale for the three panels: the largest |log2 ratio| drawn, at least 1 (a factor of 2)."""
    values = [abs(math.log2(r)) for p in d["panels"] for row in grid(d, p["key"]) for r in row if r]
    return max([1.0, *values])
