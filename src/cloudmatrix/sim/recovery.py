"""Recovery policies, each priced from its mechanism (docs/faults.md): what a fault on a decode instance
costs under a full restart, a standby (spare) instance, redundant-expert takeover (ReviveMoE's mode) or
elastic EP; a straggler or a degraded plane slows the instance instead (the plane's step priced on hardware
overridden as ``--set`` would). Times are the catalog's fixed parts (data/faults.yaml) plus the bytes each
policy moves over the path it moves them on; the degraded capacity is the cost model's step on the surviving
layout."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from cloudmatrix.catalog.faults import RecoveryConstants, recovery_constants
from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.overrides import apply_hardware_overrides
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.cost.model_load import model_bytes, warm_start_s
from cloudmatrix.deploy import BYTES_PER_ELEMENT, Deployment, plan
from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate
from cloudmatrix.sim.fault_spec import Fault
from cloudmatrix.units import GB_DECIMAL


@dataclass(frozen=True, kw_only=True)
class Recovery:
    """What one fault does to its instance, in seconds from the fault."""

    policy: str  # the policy that ran (a die-level policy cannot route around a whole-instance crash)
    parts_s: dict[str, float]  # the priced parts of the pause, in order
    cut: str  # whose sequences lose their KV: "instance" or "dies"
    fenced: tuple[int, ...] = ()  # dies out of service until reintegration
    step_factor: float = 1.0  # degraded step time over the healthy one
    degraded_fraction: float = 1.0  # instance capacity while degraded (surviving dies / step factor)
    reintegrate_after_s: float | None = None  # the repaired dies rejoin then, with a pause of their own
    reintegration_parts_s: dict[str, float] = field(default_factory=dict)
    spare_chips: int = 0  # chips held idle for this policy
    experts_lost: int = 0  # routed experts left with no copy (their tokens are dropped: accuracy, not time)
    note: str = ""

    @property
    def pause_s(self) -> float:
        return sum(self.parts_s.values())

    @property
    def reintegration_pause_s(self) -> float:
        return sum(self.reintegration_parts_s.values())


@dataclass(frozen=True)
class Instance:
    """The decode instance a fault hits: hardware, model and its deployment."""

    hw: Hardware
    model: ModelSpec
    dep: Deployment
    recovery_stack: str | None = None  # the recovery constants' stack; default: the deployment's (catalog)
    # degraded step factors by NPUs lost: a long run draws many faults of a few sizes (each prices two steps)
    factors: dict[int, float] = field(default_factory=dict, compare=False)
    # degraded step factors by (plane, bandwidth factor, latency factor)
    plane_factors: dict[tuple[str, float, float], float] = field(default_factory=dict, compare=False)


def price(costs: Instance, fault: Fault, policy: str, repair_s: float | None = None) -> Recovery:
    """The recovery of ``fault`` under ``policy`` on a decode instance."""
    k = constants(costs)
    dep = costs.dep
    if fault.kind == "straggler":
        return Recovery(
            policy="none",
            parts_s={},
            cut="none",
            step_factor=fault.slowdown,
            degraded_fraction=1.0 / fault.slowdown,
            note="a slow die sets every step's pace",
        )
    if fault.kind in ("kv_loss", "ssd_loss"):
        return _nothing_held(fault)
    if fault.pool == "prefill":
        return _prefill(costs, fault, policy, k, k.repair_s.value if repair_s is None else repair_s)
    if fault.kind == "plane_degradation":
        factor = plane_step_factor(costs, fault.plane, fault.bandwidth_factor, fault.latency_factor)
        return Recovery(
            policy="none",
            parts_s={},
            cut="none",
            step_factor=factor,
            degraded_fraction=1.0 / factor,
            note=f"the {fault.plane} plane at {fault.bandwidth_factor:g}x bandwidth, {fault.latency_factor:g}x latency",
        )
    whole = len(fault.dies) >= dep.num_chips * costs.hw.chip.num_dies
    if policy in ("redundant-experts", "elastic-ep") and whole:  # detected on the elastic path, then restarted
        return dataclasses.replace(
            _restart(costs, dep, k, k.detect_s.value), note=f"{policy} cannot route around a whole instance"
        )
    if policy == "restart":  # a fixed-membership instance: its collectives' own timeout detects the fault
        return _restart(costs, dep, k, k.restart_detect_s.value)
    if policy == "spare-instance":
        return _spare(dep, k, note="a loaded standby instance takes the traffic; the cut sequences are prefilled again")
    try:
        return _shrink(costs, dep, k, fault, policy, k.repair_s.value if repair_s is None else repair_s)
    except InfeasibleDeploymentError as e:  # the survivors cannot hold the model: only a restart serves again
        note = f"{policy}: the surviving dies cannot serve ({e})"
        return dataclasses.replace(_restart(costs, dep, k, k.detect_s.value), note=note)


def _spare(dep: Deployment, k: RecoveryConstants, note: str = "") -> Recovery:
    """A standby instance of the same size takes over: detection and a reroute, the whole instance held idle."""
    return Recovery(
        policy="spare-instance",
        parts_s={"detect": k.detect_s.value, "reroute": k.reroute_s.value},
        cut="instance",
        spare_chips=dep.num_chips,
        note=note,
    )


def _nothing_held(fault: Fault) -> Recovery:
    """A fault that stops no instance: lost KV (its sequences are cut, the dies serve on) or an EMS node's
    SSD (the cache tier's share on it is gone until it is replaced)."""
    if fault.kind == "kv_loss":
        return Recovery(policy="none", parts_s={}, cut="dies", note="the KV on these dies is lost; they serve on")
    return Recovery(policy="none", parts_s={}, cut="none", note="the EMS SSD tier's share on one node is lost")


def _prefill(costs: Instance, fault: Fault, policy: str, k: RecoveryConstants, repair_s: float) -> Recovery:
    """A prefill instance keeps no sequence beyond its batch: the batch in flight is cut, its queue moves to
    the other instances, and the instance is out for the policy's pause. A die-level policy serves on the
    survivors with its batches stretched by the dies lost (prefill is compute-bound: its throughput taken
    as proportional to its dies, an assumption) until the repair; no expert coverage is priced here."""
    dep, dies = costs.dep, costs.dep.num_chips * costs.hw.chip.num_dies
    whole = len(fault.dies) >= dies
    if policy == "restart" or (whole and policy != "spare-instance"):
        detect = k.restart_detect_s.value if policy == "restart" else k.detect_s.value
        return _restart(costs, dep, k, detect)
    if policy == "spare-instance":
        return _spare(dep, k)
    left = dies - len(fault.dies)
    return Recovery(
        policy=policy,
        parts_s={"detect": k.detect_s.value, "membership_repair": k.membership_repair_s.value},
        cut="instance",  # the batch in flight spans every die of the instance
        fenced=fault.dies,
        step_factor=dies / left,
        degraded_fraction=left / dies,
        reintegrate_after_s=repair_s,
        reintegration_parts_s={"membership_repair": k.membership_repair_s.value},
    )


def constants(costs: Instance) -> RecoveryConstants:
    """The recovery constants of the instance's recovery stack (data/faults.yaml)."""
    return recovery_constants(costs.hw.chip.family, costs.dep.stack, costs.recovery_stack)


def _restart(costs: Instance, dep: Deployment, k: RecoveryConstants, detect_s: float) -> Recovery:
    """Detect, then start the instance again on a replacement NPU: weights into HBM (from the EMS/DRAM model
    cache over UB where the system has one, else from node-local storage), process and graph set-up."""
    return Recovery(
        policy="restart",
        parts_s={
            "detect": detect_s,
            "load_weights": weights_load_s(costs, dep, k),
            "engine_init": k.engine_init_s.value,
        },
        cut="instance",
    )


def weights_load_s(costs: Instance, dep: Deployment, k: RecoveryConstants) -> float:
    """The whole model into the instance's HBM: from the EMS/DRAM model cache over UB (P3 Table 1's warm
    start, its fixed setup counted in engine_init), else from each node's local storage."""
    hw = costs.hw
    size = model_bytes(costs.model, dep.precision)
    if hw.system.ems is not None:
        return warm_start_s(hw, size, dep.num_chips) - hw.system.ems.warm_setup_s.value
    nodes = max(1, math.ceil(dep.num_chips / hw.system.chips_per_node.value))
    return size / (nodes * k.weights_gb_s_per_node.value * GB_DECIMAL)


def _shrink(
    costs: Instance, dep: Deployment, k: RecoveryConstants, fault: Fault, policy: str, repair_s: float
) -> Recovery:
    """Serve on the surviving dies. Redundant experts (ReviveMoE): the EP group is rebuilt without the lost
    ranks and no weight moves; experts with no copy left lose their tokens. Elastic EP (EEP, SGLang): the lost
    ranks' experts are loaded onto survivors over the scale-up plane first. Both rejoin the repaired dies
    after ``repair_s`` with a second membership change (healthy ranks keep their graphs)."""
    lost_chips = len({d // costs.hw.chip.num_dies for d in fault.dies})
    if lost_chips not in costs.factors:
        costs.factors[lost_chips] = degraded_step_factor(costs, dep, lost_chips)
    factor = costs.factors[lost_chips]
    dies = dep.num_chips * costs.hw.chip.num_dies
    parts = {"detect": k.detect_s.value, "membership_repair": k.membership_repair_s.value}
    uncopied = _experts_without_copy(costs, dep, fault)
    lost_experts = 0
    if policy == "elastic-ep":  # each expert left with no copy is loaded onto a survivor
        parts["expert_coverage"] = uncopied * expert_bytes(costs, dep) / _scale_up_bytes_per_s(costs)
    else:
        lost_experts = uncopied
    return Recovery(
        policy=policy,
        parts_s=parts,
        cut="dies",
        fenced=fault.dies,
        step_factor=factor,
        degraded_fraction=(dies - len(fault.dies)) / dies / factor,
        reintegrate_after_s=repair_s,
        reintegration_parts_s={
            "load_die_weights": len(fault.dies) * _die_weights_bytes(costs, dep) / _scale_up_bytes_per_s(costs),
            "membership_repair": k.membership_repair_s.value,
        },
        experts_lost=lost_experts,
    )


def degraded_step_factor(costs: Instance, dep: Deployment, lost_chips: int) -> float:
    """The decode step on the surviving NPUs (whole packages: EP must divide their dies) over the healthy
    one, at the configured batch per chip: the busiest die's expert load with fewer redundant copies."""
    if lost_chips >= dep.num_chips:
        raise InfeasibleDeploymentError("no die survives")
    per_chip = costs.hw.chip.num_dies
    layout = plan(dep, costs.hw, costs.model).layout
    ep = dep.ep - lost_chips * per_chip if dep.ep else None
    red = dep.redundant_experts
    if layout is not None and ep is not None:  # the lost dies' expert slots come out of the redundant copies
        red = max(layout.redundant - lost_chips * per_chip * layout.routed_slots_per_die, 0)
    shrunk = dataclasses.replace(dep, num_chips=dep.num_chips - lost_chips, ep=ep, redundant_experts=red)
    healthy = estimate(costs.hw, costs.model, dep).step.step_s
    return estimate(costs.hw, costs.model, shrunk).step.step_s / healthy


PLANE_KEYS = {"ub": "scale_up", "rdma": "scale_out", "vpc": "storage"}


def plane_overrides(hw: Hardware, plane: str, bandwidth_factor: float, latency_factor: float) -> list[str]:
    """The ``--set`` overrides of a degraded plane: its bandwidth scaled, and its latencies (inside and across
    nodes, and the EP operator's fitted base latency, software included: an upper bound) multiplied."""
    key = PLANE_KEYS[plane]
    p = getattr(hw.system.planes, key)
    if p is None:
        raise ConfigError(f"faults: plane {plane!r}: {hw.system.id} has no {key} plane")
    base = f"system.planes.{key}"
    bw = "bw_gb_s_per_node" if key == "storage" else "bw_gb_s_per_die"
    lat = ["latency_us"]
    if getattr(p, "latency_us_local", None) is not None:
        lat.append("latency_us_local")
    if getattr(p, "ep_comm", None) is not None:
        lat.append("ep_comm.base_latency_us")
    return [f"{base}.{bw}=x{bandwidth_factor!r}"] + [f"{base}.{k}=x{latency_factor!r}" for k in lat]


def plane_step_factor(costs: Instance, plane: str, bandwidth_factor: float, latency_factor: float) -> float:
    """The decode step with ``plane`` degraded over the healthy one, priced by the cost model on hardware
    overridden as ``--set`` would (planes the decode step does not cross leave it unchanged: factor 1)."""
    key = (plane, bandwidth_factor, latency_factor)
    if key not in costs.plane_factors:
        degraded = apply_hardware_overrides(costs.hw, plane_overrides(costs.hw, *key))
        healthy = estimate(costs.hw, costs.model, costs.dep).step.step_s
        costs.plane_factors[key] = estimate(degraded, costs.model, costs.dep).step.step_s / healthy
    return costs.plane_factors[key]


def expert_bytes(costs: Instance, dep: Deployment) -> float:
    """One routed expert over every MoE layer at the weights' precision."""
    return costs.model.expert_params() * costs.model.num_moe_layers * BYTES_PER_ELEMENT[dep.precision]


def _die_weights_bytes(costs: Instance, dep: Deployment) -> float:
    return memory_use(plan(dep, costs.hw, costs.model)).weights_bytes


def _scale_up_bytes_per_s(costs: Instance) -> float:
    up = costs.hw.system.planes.scale_up
    return up.bw_gb_s_per_die.value * GB_DECIMAL * up.efficiency.value


def _experts_without_copy(costs: Instance, dep: Deployment, fault: Fault) -> int:
    """Routed experts whose every copy was on the lost dies. Where each die holds one expert (EP > experts),
    dies [0, experts) hold the originals; which experts EPLB replicated is not known, so the lost originals
    are counted as uncopied (the worst case). Otherwise every expert has a slot and the redundant slots hold
    second copies placed apart, so only the lost slots beyond the redundant ones leave experts uncopied."""
    moe = costs.model.moe
    layout = plan(dep, costs.hw, costs.model).layout
    if moe is None or layout is None:
        return 0
    if layout.routed_slots_per_die == 1:
        return sum(1 for d in fault.dies if d < moe.num_routed)
    return max(layout.routed_slots_per_die * len(fault.dies) - layout.redundant, 0)
