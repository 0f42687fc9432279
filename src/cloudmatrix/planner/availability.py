"""`plan --availability`: the expected availability of a planned deployment's decode pool under each recovery
policy, in closed form from the catalog's fleet failure rates (data/faults.yaml) and the policies' priced
pauses (sim/recovery.py), and the spare instances a target needs (docs/faults.md, "Availability in plan").

Failures arrive as a Poisson process at the fleet rate times the instance's dies (die losses) and nodes (node
losses). Each failure costs its instance ``pause + (1 - degraded capacity) x repair + reintegration pause``
seconds of full capacity; the expected unavailability is the sum over failure kinds of rate x that loss.
Spare instances: a failure takes a standby (the pause is detection plus the reroute) while the failed instance
is repaired and then becomes the standby; a failure that finds every standby in repair restarts. The share
of failures that find none is Erlang's loss formula B(S, a) for S standbys and a = instances x rate x repair
(exact for Poisson arrivals whatever the repair time's distribution)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.faults import fault_catalog
from cloudmatrix.deploy import plan
from cloudmatrix.errors import CloudMatrixError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate
from cloudmatrix.planner.evaluate import Job
from cloudmatrix.planner.inputs import context
from cloudmatrix.planner.rank import PlannedDeployment
from cloudmatrix.sim.fault_spec import Fault
from cloudmatrix.sim.recovery import Instance, Recovery, constants, expert_bytes, price

MAX_EXTRA_SLOTS = 8  # redundant expert slots per die the sizing tries beyond the deployment's
HOURS_PER_MONTH = 730.0  # the horizon the expected downtime is quoted over (8,760 h / 12)
MAX_SPARES = 64  # standby instances the sizing tries before it says the target is out of reach
DIE_POLICIES = ("restart", "redundant-experts", "elastic-ep")


def check_target(target: float) -> float:
    """``--availability``: a fraction strictly between 0 and 1 (0.999 for three nines)."""
    if not 0.0 < target < 1.0:
        raise CloudMatrixError(f"--availability: got {target:g}; expected a fraction with 0 < target < 1 (0.999)")
    return target


def lost_s(rec: Recovery, repair_s: float) -> float:
    """Full-capacity seconds one failure costs its instance: the pause, the degraded stretch until the
    repaired dies rejoin, and the rejoining pause."""
    degraded = (1.0 - rec.degraded_fraction) * repair_s if rec.cut == "dies" else 0.0
    return rec.pause_s + degraded + rec.reintegration_pause_s


def erlang_b(servers: int, offered: float) -> float:
    """The share of arrivals that find all ``servers`` busy in a loss system offered ``offered`` Erlangs."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return b


@dataclass(frozen=True)
class _Kind:
    """One failure kind on one instance: its rate per hour and its priced recovery by policy."""

    per_hour: float
    recoveries: dict[str, Recovery]


def _kinds(inst: Instance) -> list[_Kind]:
    """Die losses (die 0: it holds an original expert, the worst case) and node losses on one instance."""
    hw, chips = inst.hw, inst.dep.num_chips
    rates, per_chip = fault_catalog().rates, hw.chip.num_dies
    per_node = int(hw.system.chips_per_node.value)
    die_hourly = rates.accelerator_per_hour.value * rates.die_share_of_accelerator.value * chips
    nodes = max(chips // per_node, 1)
    node_dies = tuple(range(min(per_node, chips) * per_chip))
    out = []
    for kind, per_hour, dies in (
        ("die_loss", die_hourly, (0,)),
        ("node_loss", rates.node_per_hour.value * nodes, node_dies),
    ):
        fault = Fault(at_s=0.0, kind=kind, instance=0, dies=dies)
        out.append(_Kind(per_hour, {p: price(inst, fault, p) for p in (*DIE_POLICIES, "spare-instance")}))
    return out


def _option(policy: str, unavailable: float, extra_chips: int, per_hour: float, **more: Any) -> dict[str, Any]:
    availability = max(1.0 - unavailable, 0.0)
    return {
        "policy": policy,
        "availability": availability,
        "downtime_min_per_month": unavailable * HOURS_PER_MONTH * 60.0,
        "failures_per_month": per_hour * HOURS_PER_MONTH,
        "extra_chips": extra_chips,
        **more,
    }


def spares_needed(instances: int, kinds: list[_Kind], repair_s: float, target: float) -> tuple[int, float] | None:
    """The fewest standby instances whose expected unavailability meets ``target``, and that unavailability."""
    per_hour = sum(k.per_hour for k in kinds)
    offered = instances * per_hour * repair_s / 3600.0
    spare = sum(k.per_hour * k.recoveries["spare-instance"].pause_s for k in kinds) / 3600.0
    restart = sum(k.per_hour * lost_s(k.recoveries["restart"], repair_s) for k in kinds) / 3600.0
    for s in range(1, MAX_SPARES + 1):
        b = erlang_b(s, offered)
        unavailable = (1.0 - b) * spare + b * restart
        if 1.0 - unavailable >= target:
            return s, unavailable
    return None


def availability_options(d: PlannedDeployment, job: Job, target: float) -> dict[str, Any]:
    """The availability of the decode pool of a planned deployment (see ``pool_availability``)."""
    hw, model = context(job.system, job.model, job.overrides)
    dep = d.decode.candidate.deployment(job.input_len, job.output_len, job.mtp_acceptance, job.stack)
    return pool_availability(Instance(hw, model, dep), d.decode_instances, target)


def pool_availability(inst: Instance, instances: int, target: float) -> dict[str, Any]:
    """Each recovery policy's expected availability for a pool of ``instances`` like ``inst``, what it costs
    in chips, and whether it meets ``target``; spare instances sized to the fewest that meet it."""
    dep = inst.dep
    kinds = _kinds(inst)
    repair_s = constants(inst).repair_s.value
    per_hour = sum(k.per_hour for k in kinds)
    options = []
    for policy in DIE_POLICIES:
        unavailable = sum(k.per_hour * lost_s(k.recoveries[policy], repair_s) for k in kinds) / 3600.0
        lost = max(k.recoveries[policy].experts_lost for k in kinds)
        ran = sorted({k.recoveries[policy].policy for k in kinds} - {policy})  # a whole-instance fallback
        options.append(_option(policy, unavailable, 0, per_hour, experts_lost=lost, falls_back_to=ran))
    sized = spares_needed(instances, kinds, repair_s, target)
    if sized is not None:
        spares, unavailable = sized
        options.append(_option("spare-instance", unavailable, spares * dep.num_chips, per_hour, spares=spares))
    redundancy = redundant_experts_needed(inst, target, repair_s)
    for o in options:
        o["meets"] = o["availability"] >= target
    return {
        "target": target,
        "scope": "decode pool",
        "instance_failures_per_hour": per_hour,
        "repair_s": repair_s,
        "options": options,
        "redundant_experts": redundancy,
        **({} if sized else {"note": f"no count of standby instances up to {MAX_SPARES} meets the target"}),
    }


def redundant_experts_needed(inst: Instance, target: float, repair_s: float) -> dict[str, Any]:
    """The fewest redundant expert slots with which a die loss and a node loss each leave every routed expert
    a copy (ReviveMoE's takeover drops no token, elastic EP moves no weight) and redundant-expert takeover
    meets ``target``; what they cost: HBM per die (taken from the KV cache), its chip equivalent, and the
    healthy step at the same batch. Slots come a whole one per die at a time (EP must place them evenly)."""
    hw, model, dep = inst.hw, inst.model, inst.dep
    layout = plan(dep, hw, model).layout
    if model.moe is None or layout is None or dep.ep is None:
        return {"reachable": False, "note": "no routed experts to replicate"}
    if layout.routed_slots_per_die == 1:
        return {
            "reachable": False,
            "note": f"EP{dep.ep} holds one expert per die: which ones EPLB copies is not known, so a lost original "
            "is counted uncopied whatever the spare dies hold (a wider per-die layout can be sized)",
        }
    n, ep = model.moe.num_routed, dep.ep
    healthy = estimate(hw, model, dep).step.step_s
    per_expert = expert_bytes(inst, dep)
    for per_die in range(layout.routed_slots_per_die, layout.routed_slots_per_die + MAX_EXTRA_SLOTS + 1):
        red = per_die * ep - n
        sized = Instance(hw, model, dataclasses.replace(dep, redundant_experts=red), inst.recovery_stack)
        try:
            step = estimate(hw, model, sized.dep).step.step_s
        except InfeasibleDeploymentError as e:
            return {"reachable": False, "note": f"at {red} redundant experts the instance does not fit ({e})"}
        kinds = _kinds(sized)
        lost = max(k.recoveries["redundant-experts"].experts_lost for k in kinds)
        unavailable = sum(k.per_hour * lost_s(k.recoveries["redundant-experts"], repair_s) for k in kinds) / 3600.0
        if lost == 0 and 1.0 - unavailable >= target:
            extra = (per_die - layout.routed_slots_per_die) * per_expert
            return {
                "reachable": True,
                "redundant_experts": red,
                "slots_per_die": per_die,
                "availability": 1.0 - unavailable,
                "extra_hbm_gb_per_die": extra / 1e9,
                "chip_equivalent": extra * dep.num_chips / hw.chip.hbm_bytes_per_die,  # the HBM as whole chips
                "step_ratio": step / healthy,
            }
    return {"reachable": False, "note": f"no layout up to {MAX_EXTRA_SLOTS} more slots per die meets the target"}
