"""`reproduce`: re-derive published rows from the model and compare (design.md §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model
from cloudmatrix.catalog.reference import ReferenceRow, ReferenceSet, load_reference
from cloudmatrix.cost import comm
from cloudmatrix.cost.ep_bench import ep_message_bytes, ep_plane
from cloudmatrix.cost.model_load import model_bytes, model_cache_times
from cloudmatrix.deployment import PAPER_SET, deployment_from_setup
from cloudmatrix.estimate import Estimate, estimate
from cloudmatrix.studies.fault_anchors import FAULT_QUANTITIES, predict_fault_row
from cloudmatrix.studies.scoring import ErrorStats, error_pct, error_stats

DEFAULT_SET = PAPER_SET


@dataclass(frozen=True, kw_only=True)
class RowResult:
    row: ReferenceRow
    predicted: float

    @property
    def error_pct(self) -> float:
        return error_pct(self.predicted, self.row.published)

    @property
    def within_tolerance(self) -> bool:
        return abs(self.error_pct) <= self.row.tolerance_pct

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.id,
            "quantity": r.quantity,
            "unit": r.unit,
            "published": r.published,
            "predicted": round(self.predicted, 3),
            "error_pct": round(self.error_pct, 2),
            "tolerance_pct": r.tolerance_pct,
            "role": r.role,
            "source": r.source,
        }


@dataclass(frozen=True, kw_only=True)
class Reproduction:
    reference: ReferenceSet
    results: list[RowResult]

    def stats(self, role: str | None = None) -> ErrorStats:
        return error_stats([r.error_pct for r in self.results if role is None or r.row.role == role])

    def to_dict(self) -> dict[str, Any]:
        every, pred = self.stats(), self.stats("predicted")
        return {
            "reference": self.reference.id,
            "title": self.reference.title,
            "rows": [r.to_dict() for r in self.results],
            "median_abs_error_pct": every.to_dict()["median_abs_error_pct"],
            "max_abs_error_pct": every.to_dict()["max_abs_error_pct"],
            "predicted_median_abs_error_pct": pred.to_dict()["median_abs_error_pct"],
            "all_within_tolerance": all(r.within_tolerance for r in self.results),
        }


def _quantity(est: Estimate, quantity: str) -> float:
    if quantity == "throughput_per_chip_tok_s":
        return est.throughput_per_chip_tok_s
    if quantity == "tpot_ms":
        return est.tpot_s * 1e3
    if quantity == "moe_layer_us":
        return est.step.layer_us["moe"]
    if quantity == "batch_time_ms":
        return est.step.step_s * 1e3
    raise ValueError(f"unknown quantity {quantity}")


def predict_row(
    ref: ReferenceSet, row: ReferenceRow, hw: Hardware | None = None, model: ModelSpec | None = None
) -> float:
    """The model's value for one published row (optionally on modified hardware, for calibration)."""
    if row.quantity in FAULT_QUANTITIES:
        return predict_fault_row(ref, row)
    hw = hw or load_hardware(row.setup.get("system", ref.system))
    model = model or load_model(ref.model)
    if row.quantity in ("dispatch_us", "combine_us"):
        op = row.setup["op"]
        t, _ = comm.ep_fused_s(
            ep_plane(hw, row.setup),
            op,
            ep_message_bytes(model, op, row.setup["tokens_per_rank"], row.setup["ep"], ep_plane(hw, row.setup)),
            row.setup["ep"],
        )
        return t * 1e6
    if row.quantity == "model_cache_s":
        return model_cache_row(hw, model, {**ref.defaults, **row.setup})

    def value(setup: dict[str, Any]) -> float:
        return _quantity(estimate(hw, model, deployment_from_setup(setup, ref.defaults)), row.quantity)

    if row.baseline is None:
        return value(row.setup)
    setups = [row.setup]
    if row.sweep:
        ((key, values),) = row.sweep.items()
        setups = [{**row.setup, key: v} for v in values]
    ratios = [value(s) / value({**s, **row.baseline}) for s in setups]
    return min(ratios) if row.reduce == "min" else max(ratios)


def model_cache_row(hw: Hardware, model: ModelSpec, setup: dict[str, Any]) -> float:
    """One time of P3 Table 1 (``setup.time``: cold_obs_s, cold_ems_s, warm_s, switch_*_s)."""
    times = model_cache_times(
        hw, model_bytes(model, setup.get("precision", "int8")), setup["instances"], setup["chips_per_instance"]
    )
    return float(getattr(times, setup["time"]))


def reproduce(set_id: str = DEFAULT_SET) -> Reproduction:
    ref = load_reference(set_id)
    return Reproduction(reference=ref, results=[RowResult(row=r, predicted=predict_row(ref, r)) for r in ref.rows])
