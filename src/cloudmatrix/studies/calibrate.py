"""Fits of the calibrated constants from the rows named as their source. The fitted values are written
into the catalog by hand (with the fit's output as their source note); `cloudmatrix calibrate` re-runs the
fits so anyone can check them. Fitted rows are reported as `fitted`, never as predictions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudmatrix.catalog.hardware import Hardware, Plane
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.reference import ReferenceSet
from cloudmatrix.cost.comm import distinct_destinations
from cloudmatrix.cost.layers import ACT_BYTES
from cloudmatrix.units import GB_DECIMAL


@dataclass(frozen=True, kw_only=True)
class EpCommFit:
    base_latency_us: float
    dispatch_efficiency: float
    combine_efficiency: float
    rms_error_pct: float


def ep_plane(hardware: Hardware, setup: dict[str, Any]) -> Plane:
    """The plane a microbenchmark row ran on (`plane: scale_up | scale_out` in its setup)."""
    return getattr(hardware.system.planes, setup.get("plane", "scale_up"))


def ep_message_bytes(
    model: ModelSpec, op: str, tokens_per_rank: int, ep: int, plane: Plane, dispatch_bytes: float = 1.0
) -> float:
    """Bytes one rank sends in the microbenchmark (experts spread evenly over ``ep`` ranks): each token once
    per distinct destination die, INT8 payload + padded scale for dispatch (7.5 KB for DeepSeek), BF16 for
    combine (14 KB)."""
    assert model.moe is not None
    n = model.moe.num_routed
    dests = distinct_destinations(n, max(n // ep, 1), ep, model.moe.top_k)
    if op == "dispatch":
        assert plane.ep_comm is not None
        msg = model.hidden * dispatch_bytes + plane.ep_comm.scale_bytes_per_token.value
    else:
        msg = model.hidden * ACT_BYTES
    return tokens_per_rank * dests * msg


def fit_ep_comm(reference: ReferenceSet, hardware: Hardware, model: ModelSpec) -> EpCommFit:
    """Least squares of ``t = base + bytes / (eff_op · bw)`` over the dispatch and combine rows."""
    rows = [r for r in reference.rows if r.quantity in ("dispatch_us", "combine_us")]
    a, y = [], []
    for r in rows:
        op, plane = r.setup["op"], ep_plane(hardware, r.setup)
        bw = plane.bw_gb_s_per_die.value * GB_DECIMAL
        t_bw = ep_message_bytes(model, op, r.setup["tokens_per_rank"], r.setup["ep"], plane) / bw * 1e6
        a.append([1.0, t_bw if op == "dispatch" else 0.0, t_bw if op == "combine" else 0.0])
        y.append(r.published)
    x, *_ = np.linalg.lstsq(np.array(a), np.array(y), rcond=None)
    pred, pub = np.array(a) @ x, np.array(y)
    rms = float(np.sqrt(np.mean(((pred - pub) / pub) ** 2)) * 100)
    return EpCommFit(
        base_latency_us=float(x[0]),
        dispatch_efficiency=float(1 / x[1]),
        combine_efficiency=float(1 / x[2]),
        rms_error_pct=rms,
    )


@dataclass(frozen=True, kw_only=True)
class ComputeFit:
    launch_us: float
    sustained_compute: float
    rows: dict[str, float]  # row id -> predicted value at the fit


def with_compute_constants(hardware: Hardware, launch_us: float, sustained: float) -> Hardware:
    chip = hardware.chip
    eff = chip.efficiency.model_copy(
        update={"gemm_serving": chip.efficiency.gemm_serving.model_copy(update={"value": sustained})}
    )
    chip = chip.model_copy(
        update={"launch_us": chip.launch_us.model_copy(update={"value": launch_us}), "efficiency": eff}
    )
    return hardware.model_copy(update={"chip": chip})


def _bisect(f: Callable[[float], float], lo: float, hi: float, iters: int = 40) -> float:
    """Root of an increasing function on [lo, hi]."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def fit_compute(
    reference: ReferenceSet,
    hardware: Hardware,
    model: ModelSpec,
    latency_row: str = "decode-layer-b96-mtp1",
    overhead_row: str = "slo15-4k256-b8-tpot",
) -> ComputeFit:
    """Fit the operator launch overhead on the launch-dominated small-batch row and the sustained compute
    fraction on the compute-dominated per-layer latency row (two equations, two unknowns)."""
    from cloudmatrix.studies.reproduce import predict_row

    rows = {r.id: r for r in reference.rows}
    lat, ovh = rows[latency_row], rows[overhead_row]

    def launch_for(sustained: float) -> float:
        def err(launch: float) -> float:
            hw = with_compute_constants(hardware, launch, sustained)
            return predict_row(reference, ovh, hw, model) - ovh.published

        return _bisect(err, 0.0, 50.0)

    def err_sustained(sustained: float) -> float:
        hw = with_compute_constants(hardware, launch_for(sustained), sustained)
        return lat.published - predict_row(reference, lat, hw, model)  # higher fraction → faster

    sustained = _bisect(err_sustained, 0.2, 1.0, iters=25)
    launch = launch_for(sustained)
    hw = with_compute_constants(hardware, launch, sustained)
    return ComputeFit(
        launch_us=launch,
        sustained_compute=sustained,
        rows={r: predict_row(reference, rows[r], hw, model) for r in (latency_row, overhead_row)},
    )


def calibration_report(set_id: str = "cloudmatrix-infer") -> dict[str, Any]:
    """Every calibrated constant of the reference set's hardware: refitted value beside the catalog value."""
    from cloudmatrix.catalog.hardware import load_hardware
    from cloudmatrix.catalog.models import load_model
    from cloudmatrix.catalog.reference import load_reference

    ref = load_reference(set_id)
    hw, model = load_hardware(ref.system), load_model(ref.model)
    comm_fit = fit_ep_comm(ref, hw, model)
    compute_fit = fit_compute(ref, hw, model)
    c = ep_plane(hw, next(r.setup for r in ref.rows if r.quantity == "dispatch_us")).ep_comm
    assert c is not None
    table = "P3 Table 6 dispatch/combine rows"
    return {
        "reference": set_id,
        "constants": {
            "ep_comm.base_latency_us": {
                "fitted": comm_fit.base_latency_us,
                "catalog": c.base_latency_us.value,
                "rows": table,
            },
            "ep_comm.dispatch_efficiency": {
                "fitted": comm_fit.dispatch_efficiency,
                "catalog": c.dispatch_efficiency.value,
                "rows": table,
            },
            "ep_comm.combine_efficiency": {
                "fitted": comm_fit.combine_efficiency,
                "catalog": c.combine_efficiency.value,
                "rows": table,
            },
            f"{hw.chip.id}.launch_us": {
                "fitted": compute_fit.launch_us,
                "catalog": hw.chip.launch_us.value,
                "rows": "slo15-4k256-b8-tpot + decode-layer-b96-mtp1 (joint)",
            },
            f"{hw.chip.id}.efficiency.gemm_serving": {
                "fitted": compute_fit.sustained_compute,
                "catalog": hw.chip.efficiency.gemm_serving.value,
                "rows": "slo15-4k256-b8-tpot + decode-layer-b96-mtp1 (joint)",
            },
        },
        "ep_comm_rms_error_pct": comm_fit.rms_error_pct,
    }
