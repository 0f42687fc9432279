"""Fits of the calibrated constants from the rows named as their source. The fitted values are written
into the catalog by hand (with the fit's output as their source note); `cloudmatrix calibrate` re-runs the
fits so anyone can check them. Fitted rows are reported as `fitted`, never as predictions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.reference import ReferenceSet
from cloudmatrix.cost.ep_bench import ep_message_bytes, ep_plane
from cloudmatrix.units import GB_DECIMAL


@dataclass(frozen=True, kw_only=True)
class EpCommFit:
    base_latency_us: float
    sync_us_per_doubling: float
    dispatch_efficiency: float
    combine_efficiency: float
    rms_error_pct: float


def fit_ep_comm(reference: ReferenceSet, hardware: Hardware, model: ModelSpec) -> EpCommFit:
    """Least squares over the dispatch and combine rows of ``t = base [+ sync · log2(EP)] + bytes / (eff · bw)``.
    Coalescing operators (CANN) fit a free handshake ``base``; per-expert operators (DeepEP low-latency) send
    the same bytes at every EP, so their growth with EP is fitted as ``sync`` rounds and ``base`` is held at
    the plane's one-way latency."""
    rows = [r for r in reference.rows if r.quantity in ("dispatch_us", "combine_us")]
    plane = ep_plane(hardware, rows[0].setup)
    assert plane.ep_comm is not None
    coalesce = plane.ep_comm.coalesce_per_die
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL
    fixed = 0.0 if coalesce else plane.latency_us.value
    a, y = [], []
    for r in rows:
        op = r.setup["op"]
        t_bw = ep_message_bytes(model, op, r.setup["tokens_per_rank"], r.setup["ep"], plane) / bw * 1e6
        first = 1.0 if coalesce else float(np.log2(r.setup["ep"]))
        a.append([first, t_bw if op == "dispatch" else 0.0, t_bw if op == "combine" else 0.0])
        y.append(r.published - fixed)
    x, *_ = np.linalg.lstsq(np.array(a), np.array(y), rcond=None)
    pred, pub = np.array(a) @ x + fixed, np.array(y) + fixed
    rms = float(np.sqrt(np.mean(((pred - pub) / pub) ** 2)) * 100)
    return EpCommFit(
        base_latency_us=float(x[0]) if coalesce else fixed,
        sync_us_per_doubling=0.0 if coalesce else float(x[0]),
        dispatch_efficiency=float(1 / x[1]),
        combine_efficiency=float(1 / x[2]),
        rms_error_pct=rms,
    )


@dataclass(frozen=True, kw_only=True)
class ComputeFit:
    launch_us: float
    gemm_serving: float
    rows: dict[str, float]  # row id -> predicted value at the fit


def with_compute_constants(hardware: Hardware, launch_us: float, serving: float) -> Hardware:
    chip = hardware.chip
    eff = chip.efficiency.model_copy(
        update={"gemm_serving": chip.efficiency.gemm_serving.model_copy(update={"value": serving})}
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
    reference: ReferenceSet, hardware: Hardware, model: ModelSpec, latency_row: str, overhead_row: str | None = None
) -> ComputeFit:
    """Fit ``gemm_serving`` on ``latency_row`` (a GEMM-heavy row). With ``overhead_row`` (a launch-dominated
    small-batch row) the operator launch overhead is fitted jointly; otherwise it keeps its catalog value."""
    from cloudmatrix.studies.reproduce import predict_row

    rows = {r.id: r for r in reference.rows}
    lat = rows[latency_row]
    higher_is_faster = lat.quantity == "throughput_per_chip_tok_s"

    def launch_for(serving: float) -> float:
        if overhead_row is None:
            return hardware.chip.launch_us.value
        ovh = rows[overhead_row]

        def err(launch: float) -> float:
            hw = with_compute_constants(hardware, launch, serving)
            return predict_row(reference, ovh, hw, model) - ovh.published

        return _bisect(err, 0.0, 50.0)

    def err_serving(serving: float) -> float:
        hw = with_compute_constants(hardware, launch_for(serving), serving)
        value = predict_row(reference, lat, hw, model)
        return value - lat.published if higher_is_faster else lat.published - value

    serving = _bisect(err_serving, 0.1, 1.0, iters=25)
    launch = launch_for(serving)
    hw = with_compute_constants(hardware, launch, serving)
    fitted = [latency_row] + ([overhead_row] if overhead_row else [])
    return ComputeFit(
        launch_us=launch,
        gemm_serving=serving,
        rows={r: predict_row(reference, rows[r], hw, model) for r in fitted},
    )


def fit_request_concentration(reference: ReferenceSet, row_id: str) -> tuple[float, float]:
    """The routing profile's request concentration that puts the default-vs-perfect EPLB prefill ratio on
    ``row_id``; (concentration, predicted ratio at the fit). The ratio rises with the concentration (a
    request that routes like the long-run mix leaves EPLB nothing to miss), so bisect on its logarithm."""
    from cloudmatrix.catalog.routing import model_routing
    from cloudmatrix.catalog.sourced import Sourced
    from cloudmatrix.studies.reproduce import predict_row

    row = next(r for r in reference.rows if r.id == row_id)
    base = model_routing(reference.model)

    def ratio(log_c: float) -> float:
        c = Sourced(value=float(np.exp(log_c)), source="calibrate: trial value")
        setup = {**row.setup, "routing": base.model_copy(update={"request_concentration": c})}
        return predict_row(reference, row.model_copy(update={"setup": setup}))

    log_c = _bisect(lambda x: ratio(x) - row.published, np.log(0.5), np.log(1e5), iters=30)
    return float(np.exp(log_c)), ratio(log_c)


# Which rows fix which constants, per reference set (docs/model.md "Calibrated constants").
COMPUTE_FITS = {
    "cloudmatrix-infer": ("decode-layer-b96-mtp1", "slo15-4k256-b8-tpot"),
    "hopper-baselines": ("ds-h800-prefill-profile", None),
}


def calibration_report(progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every calibrated constant: refitted value beside the catalog value, with the rows it was fitted on;
    ``progress(done, total)`` after each fit."""
    from cloudmatrix.catalog.hardware import load_hardware
    from cloudmatrix.catalog.models import load_model
    from cloudmatrix.catalog.reference import load_reference

    constants: dict[str, dict[str, Any]] = {}
    rms: dict[str, float] = {}
    total = len(COMPUTE_FITS) + 3
    tick = progress or (lambda done, of: None)
    for done, (set_id, (latency_row, overhead_row)) in enumerate(COMPUTE_FITS.items()):
        tick(done, total)
        ref = load_reference(set_id)
        hw, model = load_hardware(ref.system), load_model(ref.model)
        comm_fit = fit_ep_comm(ref, hw, model)
        rms[set_id] = comm_fit.rms_error_pct
        plane = ep_plane(hw, next(r.setup for r in ref.rows if r.quantity == "dispatch_us"))
        c = plane.ep_comm
        assert c is not None
        table = f"{set_id}: dispatch/combine rows"
        prefix = f"{hw.system.id}.{plane.name}.ep_comm"
        free = (
            ("base_latency_us", comm_fit.base_latency_us, c.base_latency_us.value)
            if c.coalesce_per_die
            else (
                "sync_us_per_doubling",
                comm_fit.sync_us_per_doubling,
                c.sync_us_per_doubling.value if c.sync_us_per_doubling else 0.0,
            )
        )
        for name, fitted, catalog in (
            free,
            ("dispatch_efficiency", comm_fit.dispatch_efficiency, c.dispatch_efficiency.value),
            ("combine_efficiency", comm_fit.combine_efficiency, c.combine_efficiency.value),
        ):
            constants[f"{prefix}.{name}"] = {"fitted": fitted, "catalog": catalog, "rows": table}
        fit = fit_compute(ref, hw, model, latency_row, overhead_row)
        rows = " + ".join(fit.rows)
        constants[f"{hw.chip.id}.efficiency.gemm_serving"] = {
            "fitted": fit.gemm_serving,
            "catalog": hw.chip.efficiency.gemm_serving.value,
            "rows": rows,
        }
        if overhead_row:
            constants[f"{hw.chip.id}.launch_us"] = {
                "fitted": fit.launch_us,
                "catalog": hw.chip.launch_us.value,
                "rows": rows,
            }
    tick(total - 3, total)
    constants.update(_routing_and_cache_fits())
    from cloudmatrix.studies.kernel_fit import fit_kernel_curves
    from cloudmatrix.studies.stack_fit import fit_stack_costs

    tick(total - 2, total)
    constants.update({k: {n: v for n, v in row.items() if n != "points"} for k, row in fit_kernel_curves().items()})
    tick(total - 1, total)
    constants.update(fit_stack_costs())
    constants.update(_graph_fits())
    return {"constants": constants, "ep_comm_rms_error_pct": rms}


def _graph_fits() -> dict[str, dict[str, Any]]:
    """Each stack's fitted cost per op of its captured device graph (Ascend, and a family's own)."""
    from cloudmatrix.catalog.hardware import load_hardware
    from cloudmatrix.catalog.stacks import stack_costs, stack_graph
    from cloudmatrix.cost.pricing import graph_node_prior_us, graph_task_prior_us
    from cloudmatrix.studies.graph_fit import (
        family_fit_rows,
        family_op_launch_entries,
        fit_family_op_launch,
        fit_graph_op_launch,
    )

    fit = fit_graph_op_launch("sglang-ascend")
    graph = stack_graph(fit.stack)
    assert graph is not None and graph.op_launch_us is not None
    prior = graph_task_prior_us(load_hardware("atlas-800t-a3"), graph)  # the runtime's prior, fitted on no row
    out = {
        f"stacks.{fit.stack}.graph.op_launch_us": {
            "fitted": fit.op_launch_us,
            "catalog": graph.op_launch_us.value,
            "prior": prior,
            "rows": " + ".join(r.row_id for r in fit.rows) + f"; prior {prior:.2f} on the 910C",
        }
    }
    for stack, family in family_op_launch_entries():
        own = fit_family_op_launch(stack, family)
        costs = stack_costs(stack, family)
        assert costs is not None and costs.op_launch_us is not None
        rows = " + ".join(r.row_id for r in own.rows)
        entry: dict[str, Any] = {"fitted": own.op_launch_us, "catalog": costs.op_launch_us.value, "rows": rows}
        systems = [r.system for r in family_fit_rows(stack, family)]
        if costs.tasks_per_op is not None and systems:  # the prior on the chip its first fit row ran on
            entry["prior"] = graph_node_prior_us(load_hardware(systems[0]), costs.tasks_per_op)
            entry["rows"] += f"; prior {entry['prior']:.2f} on the {systems[0]}"
        out[f"stacks.{stack}.{family}.op_launch_us"] = entry
    return out


# Fits outside the per-chip compute and fabric constants: the routing profile and EMS's model cache.
CONCENTRATION_ROW = "prefill-eplb-default-vs-perfect"
MODEL_CACHE_ROWS = ("model-warm-start", "model-cold-start-ems")


def _routing_and_cache_fits() -> dict[str, dict[str, Any]]:
    from cloudmatrix.catalog.hardware import load_hardware
    from cloudmatrix.catalog.models import load_model
    from cloudmatrix.catalog.reference import load_reference
    from cloudmatrix.catalog.routing import model_routing
    from cloudmatrix.cost.model_load import fit_model_load, model_bytes

    ref = load_reference("cloudmatrix-infer")
    conc, _ = fit_request_concentration(ref, CONCENTRATION_ROW)
    out = {
        f"routing.{ref.model}.request_concentration": {
            "fitted": conc,
            "catalog": model_routing(ref.model).concentration,
            "rows": CONCENTRATION_ROW,
        }
    }
    hw, model = load_hardware(ref.system), load_model(ref.model)
    rows = {r.id: r for r in ref.rows}
    warm, cold = (rows[i] for i in MODEL_CACHE_ROWS)
    ems = hw.system.ems
    assert ems is not None
    setup, obs = fit_model_load(
        hw, model_bytes(model, "int8"), warm.setup["chips_per_instance"], warm.published, cold.published
    )
    for name, fitted, catalog in (
        ("warm_setup_s", setup, ems.warm_setup_s.value),
        ("obs_efficiency", obs, ems.obs_efficiency.value),
    ):
        out[f"{hw.system.id}.ems.{name}"] = {"fitted": fitted, "catalog": catalog, "rows": " + ".join(MODEL_CACHE_ROWS)}
    return out
