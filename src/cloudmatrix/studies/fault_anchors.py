"""The fault-anchors reference set (`cloudmatrix reproduce fault-anchors`): each published recovery figure
predicted by pricing its policy on its deployment (sim/recovery.py), never by a simulation run, so a row's
value is the mechanism's sum and nothing else."""

from __future__ import annotations

import dataclasses
from typing import Any

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.reference import ReferenceRow, ReferenceSet
from cloudmatrix.deployment import deployment_from_setup
from cloudmatrix.sim.fault_spec import Fault, scope
from cloudmatrix.sim.recovery import Instance, Recovery, price

FAULT_QUANTITIES = (
    "recovery_pause_s",
    "reintegration_pause_s",
    "restart_s",
    "back_to_95pct_s",
    "degraded_throughput_ratio",
    "recovery_saving",
)


def predict_fault_row(ref: ReferenceSet, row: ReferenceRow) -> float:
    s = {**ref.defaults, **row.setup}
    inst = anchor_instance(s)
    fault = _fault(inst, s)
    q = row.quantity
    if q == "restart_s":
        return price(inst, fault, "restart").pause_s
    rec = price(inst, fault, s["policy"], s.get("repair_s"))
    if q == "recovery_pause_s":
        return rec.pause_s
    if q == "reintegration_pause_s":
        return rec.reintegration_pause_s
    if q == "degraded_throughput_ratio":
        return rec.degraded_fraction
    if q == "back_to_95pct_s":
        return back_to_95pct_s(rec)
    if q == "recovery_saving":
        return 1.0 - rec.pause_s / price(inst, fault, "restart").pause_s
    raise ValueError(f"unknown fault quantity {q}")


def back_to_95pct_s(rec: Recovery) -> float:
    """Capacity back to 95 %: at the end of the pause when the survivors give that much, else after the
    repaired dies rejoin (the analytic figure; the simulation adds the drain of the backlog)."""
    if rec.degraded_fraction >= 0.95 or rec.reintegrate_after_s is None:
        return rec.pause_s
    return rec.pause_s + rec.reintegrate_after_s + rec.reintegration_pause_s


def anchor_instance(s: dict[str, Any]) -> Instance:
    hw, model = load_hardware(s["system"]), load_model(s["model"])
    dep = dataclasses.replace(
        deployment_from_setup(s, {}), stack=s.get("stack"), redundant_experts=s.get("redundant_experts")
    )
    return Instance(hw, model, dep, s.get("recovery_stack"))


def _fault(inst: Instance, s: dict[str, Any]) -> Fault:
    per_chip = inst.hw.chip.num_dies
    dies = inst.dep.num_chips * per_chip
    if "lost_ranks" in s:  # several ranks at once (SGLang's 16 of 32)
        return Fault(at_s=0.0, kind="npu_loss", instance=0, dies=tuple(range(int(s["lost_ranks"]))))
    per_node = int(inst.hw.system.chips_per_node.value) * per_chip
    return Fault(at_s=0.0, kind=s["kind"], instance=0, dies=scope(s["kind"], 0, dies, per_chip, per_node))
