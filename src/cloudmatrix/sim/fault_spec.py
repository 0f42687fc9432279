"""The ``faults:`` section of a scenario: fault events at given times, or failure rates per component drawn
from the scenario's seed, the recovery policy and what happens to the requests a fault cuts.

    faults: [{at_s: 60, kind: die_loss, target: decode.0.die.17}]
    faults: {rates: {die_per_hour: 1.2e-4}, policy: elastic-ep, requests: retry}
    faults: [{at_s: 60, kind: plane_degradation, target: decode.0, plane: ub, bandwidth_factor: 0.5}]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from cloudmatrix.catalog.faults import fault_catalog
from cloudmatrix.catalog.strict import StrictModel
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import MAX_SIM_S
from cloudmatrix.workload.rng import stream

Kind = Literal[
    "die_loss",
    "npu_loss",
    "node_loss",
    "instance_crash",
    "straggler",
    "plane_degradation",
    "kv_loss",  # the KV of the sequences on a die (or the instance) is lost; the hardware serves on
    "cpu_loss",  # the node's host CPU: its scheduler and host process, so the node's NPUs, and its EMS DRAM
    "ssd_loss",  # an EMS node's SSD: the cache tier's share on it (no effect without an EMS SSD tier)
]
PlaneName = Literal["ub", "rdma", "vpc"]  # the scale-up (UB, NVLink), scale-out (RDMA) and storage (VPC) planes
SLOWING_KINDS = ("straggler", "plane_degradation")  # nothing is lost: the instance runs slower for a window
POOLS = ("decode", "prefill", "aggregated")  # an aggregated (co-located) pool's instances are targeted as either
Requests = Literal["retry", "fail", "migrate"]
Policy = Literal["restart", "spare-instance", "redundant-experts", "elastic-ep"]
POLICIES: tuple[str, ...] = ("restart", "spare-instance", "redundant-experts", "elastic-ep")
NO_DIE_KINDS = ("plane_degradation", "ssd_loss")  # nothing of the instance's dies is lost
MAX_EVENTS = 10_000  # fault events one run may hold (drawn or written)
_TARGET = re.compile(r"^(?P<pool>[a-z]+)\.(?P<inst>\d{1,6})(?:\.die\.(?P<die>\d{1,7}))?$")


class _Spec(StrictModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class FaultEvent(_Spec):
    at_s: float = Field(ge=0, le=MAX_SIM_S)
    kind: Kind
    target: str = Field(default="decode.0.die.0", max_length=64)  # pool.instance[.die.N]
    slowdown: float = Field(default=2.0, gt=1, le=100)  # straggler: step time multiplier on its instance
    duration_s: float = Field(default=60.0, gt=0, le=MAX_SIM_S)  # straggler, plane_degradation: how long
    plane: PlaneName = "ub"  # plane_degradation: the plane degraded (for the whole system: a plane is shared)
    bandwidth_factor: float = Field(default=1.0, gt=0, le=1)  # plane_degradation: bandwidth kept
    latency_factor: float = Field(default=1.0, ge=1, le=1000)  # plane_degradation: latency multiplier

    @model_validator(mode="after")
    def _degrades(self) -> FaultEvent:
        if self.kind == "plane_degradation" and self.bandwidth_factor == 1.0 and self.latency_factor == 1.0:
            raise ValueError("plane_degradation: give bandwidth_factor < 1 or latency_factor > 1 (nothing degrades)")
        return self

    @model_validator(mode="after")
    def _target_form(self) -> FaultEvent:
        m = _TARGET.match(self.target)
        if m is None:
            raise ValueError(f"target {self.target!r}: expected POOL.INSTANCE or POOL.INSTANCE.die.N (decode.0.die.17)")
        if m["pool"] not in POOLS:
            raise ValueError(f"target {self.target!r}: pool {m['pool']!r}; expected one of {', '.join(POOLS)}")
        return self

    @property
    def pool(self) -> str:
        m = _TARGET.match(self.target)
        assert m is not None
        return "prefill" if m["pool"] == "prefill" else "decode"  # decode and aggregated: the decode batches

    @property
    def instance(self) -> int:
        m = _TARGET.match(self.target)
        assert m is not None
        return int(m["inst"])

    @property
    def die(self) -> int:
        m = _TARGET.match(self.target)
        assert m is not None
        return int(m["die"] or 0)


class FaultRates(_Spec):
    """Failures per component-hour; zero or absent draws none. ``fleet: true`` draws at the catalog's fleet
    rates instead (data/faults.yaml: one failure per 7.9 h per 1,024 accelerators, 2-5 % of nodes a month)."""

    fleet: bool = False
    die_per_hour: float = Field(default=0.0, ge=0, le=3600.0)
    node_per_hour: float = Field(default=0.0, ge=0, le=3600.0)
    cpu_per_hour: float = Field(default=0.0, ge=0, le=3600.0)  # per node (its host); no fleet figure
    ssd_per_hour: float = Field(default=0.0, ge=0, le=3600.0)  # per EMS node; no fleet figure
    horizon_s: float | None = Field(default=None, gt=0, le=MAX_SIM_S)  # default: the run's duration_s


class FaultsSpec(_Spec):
    events: list[FaultEvent] = Field(default_factory=list, max_length=MAX_EVENTS)
    rates: FaultRates | None = None
    policy: Policy = "restart"
    # what a cut request does: resubmitted (re-prefilled), counted failed, or (a failover to a standby) its
    # KV migrated over the fabric where it survived the fault; a sequence whose KV is lost is resubmitted
    requests: Requests = "retry"
    repair_s: float | None = Field(default=None, gt=0, le=MAX_SIM_S)  # a lost die is back; default: catalog
    recovery_stack: Literal["xccl", "eep", "mooncake"] | None = None  # default: the stack's (data/faults.yaml)

    @model_validator(mode="before")
    @classmethod
    def _list_is_events(cls, data: Any) -> Any:
        return {"events": data} if isinstance(data, list) else data


def faults_from_file(path: str) -> FaultsSpec:
    """A ``--faults`` file: a scenario (its ``faults:`` section is taken) or the section itself."""
    from pathlib import Path

    from pydantic import ValidationError

    from cloudmatrix.catalog.sourced import describe_validation_error
    from cloudmatrix.inputs import read_yaml_file

    data = read_yaml_file(Path(path), "--faults")
    if isinstance(data, dict) and "faults" in data:
        data = data["faults"]
    try:
        return FaultsSpec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"--faults {Path(path).name}: {describe_validation_error(e)}") from None


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One fault on one decode instance: the dies it takes (all of them for a crash), resolved on hardware."""

    at_s: float
    kind: str
    instance: int
    dies: tuple[int, ...]
    pool: str = "decode"  # decode (or an aggregated pool's instance) or prefill
    slowdown: float = 1.0
    duration_s: float = 0.0
    plane: str = ""  # plane_degradation: ub, rdma or vpc
    bandwidth_factor: float = 1.0
    latency_factor: float = 1.0


@dataclass(frozen=True)
class PoolShape:
    """A pool's instances and the dies of each, as the faults resolve against them."""

    instances: int
    dies: int


def resolve(
    spec: FaultsSpec,
    *,
    pools: dict[str, PoolShape],
    dies_per_chip: int,
    dies_per_node: int,
    seed: int,
    horizon_s: float | None,
) -> list[Fault]:
    """The run's faults in time order: the written events (checked against the deployment's pools: decode,
    which an aggregated pool answers to, and prefill) and those drawn from the rates over the horizon with
    the scenario's seed (stream ``faults``; drawn faults strike the decode pool)."""
    out = [_fault(e, i, pools, dies_per_chip, dies_per_node) for i, e in enumerate(spec.events)]
    if spec.rates is not None:
        horizon = spec.rates.horizon_s or horizon_s
        if horizon is None:
            raise ConfigError("faults.rates: give faults.rates.horizon_s or the scenario's duration_s")
        out += _drawn(spec.rates, horizon, pools["decode"], dies_per_chip, dies_per_node, seed)
    if len(out) > MAX_EVENTS:
        raise ConfigError(f"faults: {len(out)} fault events; at most {MAX_EVENTS} (lower the rates or horizon)")
    return sorted(out, key=lambda f: (f.at_s, f.pool, f.instance, f.dies))


def _fault(e: FaultEvent, i: int, pools: dict[str, PoolShape], per_chip: int, per_node: int) -> Fault:
    pool = pools.get(e.pool)
    if pool is None:
        raise ConfigError(f"faults.events.{i}.target: {e.target!r}; the scenario has no {e.pool} pool")
    if e.instance >= pool.instances:
        raise ConfigError(f"faults.events.{i}.target: instance {e.instance}; the {e.pool} pool has {pool.instances}")
    if e.die >= pool.dies:
        raise ConfigError(f"faults.events.{i}.target: die {e.die}; a {e.pool} instance has dies 0-{pool.dies - 1}")
    if e.pool == "prefill" and e.kind in ("kv_loss", "plane_degradation"):
        raise ConfigError(f"faults.events.{i}.kind: {e.kind} strikes decode instances (a prefill keeps no KV)")
    whole = _TARGET.match(e.target)["die"] is None  # type: ignore[index]
    return Fault(
        at_s=e.at_s,
        kind=e.kind,
        instance=e.instance,
        pool=e.pool,
        dies=tuple(range(pool.dies))
        if e.kind == "kv_loss" and whole
        else scope(e.kind, e.die, pool.dies, per_chip, per_node),
        slowdown=e.slowdown if e.kind == "straggler" else 1.0,
        duration_s=e.duration_s if e.kind in (*SLOWING_KINDS, "ssd_loss") else 0.0,
        **_plane_fields(e),
    )


def _plane_fields(e: FaultEvent) -> dict[str, Any]:
    if e.kind != "plane_degradation":
        return {}
    return {"plane": e.plane, "bandwidth_factor": e.bandwidth_factor, "latency_factor": e.latency_factor}


def scope(kind: str, die: int, dies: int, per_chip: int, per_node: int) -> tuple[int, ...]:
    """The dies a fault of ``kind`` at ``die`` takes: itself, its package, its node (a node's host CPU takes
    the node's NPUs with it), or the instance."""
    if kind in ("die_loss", "straggler", "kv_loss"):
        return (die,)
    if kind in NO_DIE_KINDS:  # no die is lost: a plane every step crosses, or the EMS tier's SSD
        return ()
    if kind == "instance_crash":
        return tuple(range(dies))
    unit = per_chip if kind == "npu_loss" else per_node
    first = die // unit * unit
    return tuple(range(first, min(first + unit, dies)))


def _drawn(rates: FaultRates, horizon: float, pool: PoolShape, per_chip: int, per_node: int, seed: int) -> list[Fault]:
    """Poisson failures of each kind over the horizon, a uniform target die each (one stream, fixed order:
    die and node losses first, so a seed draws the same ones as before CPU and SSD rates existed)."""
    rng = stream(seed, "faults")
    out: list[Fault] = []
    die_rate, node_rate = rates.die_per_hour, rates.node_per_hour
    if rates.fleet:
        fleet = fault_catalog().rates
        die_rate = fleet.accelerator_per_hour.value * fleet.die_share_of_accelerator.value / per_chip
        node_rate = fleet.node_per_hour.value
    instances, dies = pool.instances, pool.dies
    nodes = instances * max(dies // per_node, 1)
    for kind, per_hour, units in (
        ("die_loss", die_rate, instances * dies),
        ("node_loss", node_rate, nodes),
        ("cpu_loss", rates.cpu_per_hour, nodes),
        ("ssd_loss", rates.ssd_per_hour, nodes),
    ):
        rate_s = per_hour * units / 3600.0
        if rate_s <= 0:
            continue
        count = int(rng.poisson(rate_s * horizon))
        if count > MAX_EVENTS:
            raise ConfigError(f"faults.rates: {count} expected faults over {horizon:g} s; at most {MAX_EVENTS}")
        times = np.sort(rng.uniform(0.0, horizon, count))
        where = rng.integers(0, instances * dies, count)
        for t, w in zip(times.tolist(), where.tolist(), strict=True):
            inst, die = divmod(int(w), dies)
            out.append(Fault(at_s=t, kind=kind, instance=inst, dies=scope(kind, die, dies, per_chip, per_node)))
    return out
