"""Faults as events in the simulation (design.md §3 rule 11): at each fault the injector cuts the sequences
whose KV the fault loses (each retried, migrated or counted failed, never dropped silently), fences the lost
dies from admission, holds the instance's loop for the policy's pause and slows its steps by the degraded
factor until the repaired dies rejoin; on a prefill instance it cuts the batch in flight and routes its queue
to the others (sim/fault_pools.py). The engine asks it how long to hold an instance, by what factor to stretch
a step, whether a prefill batch was cut, and which instances routing must avoid."""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import simpy

from cloudmatrix.errors import ConfigError
from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.prefill import PrefillQueue
from cloudmatrix.serving.requests import RequestTable, State
from cloudmatrix.sim.context_cache import PrefixCache
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.decode_side import Listener
from cloudmatrix.sim.events import Sleeper
from cloudmatrix.sim.fault_pools import (
    activate,
    aggregated_cut,
    drain_prefill_queue,
    later,
    lose_cache_share,
    migration_s,
    prefill_cut,
    reserve,
    restore_cache_share,
)
from cloudmatrix.sim.fault_report import fault_metrics
from cloudmatrix.sim.fault_spec import SLOWING_KINDS, Fault, FaultsSpec, PoolShape, resolve
from cloudmatrix.sim.metrics import Recorder
from cloudmatrix.sim.recovery import Instance, Recovery, constants, price
from cloudmatrix.sim.scenario import Scenario


@dataclass(frozen=True)
class Migrating:
    """Sequences whose KV survived a failover, on their way to the standby."""

    rids: np.ndarray
    left: np.ndarray  # tokens each had left
    seconds: float  # the transfer over the fabric


class Simulation(Protocol):
    """What the injector uses of the simulation it serves (sim/engine.py), named here so the two modules do
    not import each other."""

    env: simpy.Environment
    s: Scenario
    costs: StepCosts
    decodes: list[DecodeBatch]
    decode_loops: list[Sleeper]
    rec: Recorder
    table: RequestTable
    listener: Listener | None
    prefill_queues: list[PrefillQueue]
    prefill_busy: list[bool]
    prefill_batches: list[list[int]]
    prefill_loops: list[Sleeper]
    aggregated: list[Any]  # sim/aggregated.AggregatedInstance (fault_pools.Aggregated)
    ems: PrefixCache | None

    def _admit_waiting(self) -> None: ...

    def _enqueue(self, rid: int) -> None: ...

    def account_finished(self, count: int) -> None: ...


class FaultInjector:
    def __init__(self, sim: Simulation, spec: FaultsSpec) -> None:
        s = sim.s
        d = s.aggregated or s.decode
        assert d is not None
        if d.tp != 1:
            raise ConfigError(f"faults: decode.tp is {d.tp}; faults need data-parallel attention (tp 1)")
        self.sim, self.spec = sim, spec
        hw, model = sim.costs.hw, sim.costs.model
        per_chip = hw.chip.num_dies
        pools = {"decode": PoolShape(d.instances, sim.decodes[0].num_dies)}
        if s.prefill is not None and s.aggregated is None:
            pools["prefill"] = PoolShape(s.prefill.instances, s.prefill.chips * per_chip)
        self.faults = resolve(
            spec,
            pools=pools,
            dies_per_chip=per_chip,
            dies_per_node=int(hw.system.chips_per_node.value) * per_chip,
            seed=s.seed,
            horizon_s=s.duration_s,
        )
        on = {"decode": Instance(hw, model, sim.costs.decode_deployment(), spec.recovery_stack)}
        if "prefill" in pools:
            on["prefill"] = Instance(hw, model, sim.costs.prefill_deployment(), spec.recovery_stack)
        # each fault priced for its own dies (an instance keeps the degraded steps it priced by size)
        self.recoveries: list[Recovery] = [price(on[f.pool], f, spec.policy, spec.repair_s) for f in self.faults]
        self.repair_s = constants(on["decode"]).repair_s.value if spec.repair_s is None else spec.repair_s
        chips = [p.instances * p.chips for p in (s.prefill, s.decode, s.aggregated) if p is not None]
        self.idle_chips = hw.system.num_chips - sum(chips)
        n, n_pre = d.instances, pools["prefill"].instances if "prefill" in pools else 0
        self.hold_until, self.factor = [0.0] * n, [1.0] * n
        self.out: list[set[int]] = [set() for _ in range(n)]  # dies lost until they rejoin, per instance
        self.prefill_hold_until, self.prefill_factor = [0.0] * n_pre, [1.0] * n_pre
        self.prefill_struck = [-1.0] * n_pre  # when a fault last struck each prefill instance
        self.events: list[dict[str, Any]] = []  # one record per fault, filled as it unfolds
        self.retried: set[int] = set()
        self.failed = 0
        self.cut = 0
        self.migrated = 0

    def start(self) -> None:
        self.sim.env.process(self._run())

    # ---- what the engine asks -------------------------------------------------------------------------------
    def hold_s(self, inst: int) -> float:
        return max(self.hold_until[inst] - self.sim.env.now, 0.0)

    def step_factor(self, inst: int) -> float:
        return self.factor[inst]

    def prefill_hold_s(self, inst: int) -> float:
        return max(self.prefill_hold_until[inst] - self.sim.env.now, 0.0)

    def prefill_step_factor(self, inst: int) -> float:
        return self.prefill_factor[inst]

    def prefill_cut(self, inst: int, start: float) -> bool:
        """A prefill batch that started before a fault struck its instance was cut (its requests handled)."""
        return self.prefill_struck[inst] >= start

    def route(self, loads: list[float], prefill: bool) -> list[float]:
        """Loads for routing with the held instances out of reach (unless every one is held)."""
        held = [self.prefill_hold_s(i) > 0 if prefill else self.hold_s(i) > 0 for i in range(len(loads))]
        if all(held) or not any(held):
            return loads
        return [math.inf if h else x for x, h in zip(loads, held, strict=True)]

    def intercept(self, rid: int, inst: int, slot: int) -> bool:
        """A KV hand-off landing on a fenced die (reserved before the fault) is cut like a running sequence."""
        batch = self.sim.decodes[inst]
        if not batch.fenced[slot // batch.cap]:
            return False
        batch.release(slot)
        self._cut(rid, self.events[-1] if self.events else None)
        return True

    def report(self, end_s: float) -> dict[str, Any]:
        t = self.sim.table
        retried = np.array(sorted(self.retried), dtype=np.int64)
        counts = {
            "cut": self.cut,
            "retried": int(retried.size),
            "retried_done": int(np.sum(t.state[retried] == State.DONE)) if retried.size else 0,
            "failed": self.failed,
            "migrated": self.migrated,
        }
        # faults scheduled after the run ended are counted but have no timeline
        head = {"policy": self.spec.policy, "requests_mode": self.spec.requests, "scheduled": len(self.faults)}
        return head | fault_metrics(self.events, t, self.sim.rec, end_s, len(self.sim.decodes), counts)

    # ---- the faults -----------------------------------------------------------------------------------------
    def _run(self) -> Generator[Any, Any, None]:
        env = self.sim.env
        for fault, rec in zip(self.faults, self.recoveries, strict=True):
            if fault.at_s > env.now:
                yield env.timeout(fault.at_s - env.now)
            self._apply(fault, rec)

    def _record(self, fault: Fault, rec: Recovery) -> dict[str, Any]:
        now = self.sim.env.now
        record: dict[str, Any] = {
            "at_s": now,
            "kind": fault.kind,
            "pool": fault.pool,
            "instance": fault.instance,
            "dies": len(fault.dies),
            "policy": rec.policy,
            "pause_parts_s": dict(rec.parts_s),
            "pause_s": rec.pause_s,
            "resume_at_s": now + rec.pause_s,
            "degraded_fraction": rec.degraded_fraction,
            "experts_lost": rec.experts_lost,
            "spare_chips": rec.spare_chips,
            "cut": 0,
            "retried": 0,
            "failed": 0,
            **({"note": rec.note} if rec.note else {}),
        }
        if rec.spare_chips > self.idle_chips:
            record["note"] = (
                f"the standby needs {rec.spare_chips} chips; {self.sim.s.system} has {self.idle_chips} idle, so it "
                "stands in another system"
            )
        self.events.append(record)
        return record

    def _apply(self, fault: Fault, rec: Recovery) -> None:
        env, inst = self.sim.env, fault.instance
        now = env.now
        record = self._record(fault, rec)
        if fault.kind == "ssd_loss":
            self._lose_cache("ssd", record, fault.duration_s)
            return
        if fault.pool == "prefill":
            self._apply_prefill(fault, rec, record)
            return
        if fault.kind in SLOWING_KINDS:
            self.factor[inst] *= rec.step_factor
            record["resume_at_s"] = now
            record["until_s"] = now + fault.duration_s
            later(env, fault.duration_s, lambda: self._unslow(inst, rec.step_factor))
            return
        if fault.kind in ("node_loss", "cpu_loss"):  # the node's DRAM (its part of the EMS pool) goes with it
            self._lose_cache("dram", record, self.repair_s)
        whole = rec.cut == "instance"
        batch = self.sim.decodes[inst]
        self.hold_until[inst] = max(self.hold_until[inst], now + rec.pause_s)  # before anything is re-routed
        migrating = self._evict(batch, fault, whole, record)
        if self.sim.aggregated:
            cut, moved = aggregated_cut(self.sim.aggregated[inst], batch, self.sim.table, set(fault.dies), whole)
            for rid in cut:
                self._cut(rid, record)
            for rid in moved:
                self.sim._enqueue(rid)
        self.out[inst].update(rec.fenced)
        fence = np.arange(batch.num_dies) if whole else np.array(rec.fenced, dtype=np.int64)
        batch.fenced[fence] = True  # no admissions while the instance (or the lost die) is out
        later(env, rec.pause_s, lambda: self._resume(inst, rec, record, migrating))

    def _evict(self, batch: DecodeBatch, fault: Fault, whole: bool, record: dict[str, Any]) -> Migrating | None:
        """Release the sequences whose KV the fault loses (or, for a failover, whose instance stops); with
        ``requests: migrate`` a failover keeps those whose KV survived, to move it to the standby."""
        migrate = whole and self.spec.requests == "migrate" and record["policy"] == "spare-instance"
        t = self.sim.table
        seq_dies = batch.active_slots() // batch.cap
        dies = np.arange(batch.num_dies) if whole else np.array(fault.dies, dtype=np.int64)
        on_dies = seq_dies[np.isin(seq_dies, dies)]
        rids, left = batch.evict(dies)
        t.generated[rids] = t.output_len[rids] - left  # the batch held the counts while they decoded
        keep = ~np.isin(on_dies, np.array(fault.dies, dtype=np.int64)) if migrate else np.zeros(rids.size, bool)
        for rid in rids[~keep].tolist():
            self._cut(rid, record)
        if not keep.any():
            return None
        ctx = t.input_len[rids[keep]] + t.generated[rids[keep]]
        return Migrating(rids[keep], left[keep], migration_s(self.sim, ctx, on_dies[keep]))

    def _resume(self, inst: int, rec: Recovery, record: dict[str, Any], migrating: Migrating | None) -> None:
        if rec.cut == "instance":
            self._fence(inst)  # restarted on a replacement NPU, or replaced by the standby
        elif rec.step_factor != 1.0 or rec.reintegrate_after_s is not None:
            self.factor[inst] *= rec.step_factor
            if rec.reintegrate_after_s is not None and rec.fenced:
                later(self.sim.env, rec.reintegrate_after_s, lambda: self._reintegrate(inst, rec, record))
        if migrating is not None:
            self._migrate(inst, migrating, record)
        self.sim._admit_waiting()

    def _migrate(self, inst: int, m: Migrating, record: dict[str, Any]) -> None:
        """The survivors' KV lands on the standby after its transfer; they decode on from where they were."""
        batch, t = self.sim.decodes[inst], self.sim.table
        slots, homeless = reserve(batch, t, m.rids)
        for rid in homeless:  # no room on the standby: resubmitted
            self._cut(rid, record)
        record["migrated"] = int(m.rids.size) - len(homeless)
        record["migration_s"] = m.seconds
        self.migrated += record["migrated"]

        def land() -> None:
            activate(batch, t, m.rids, m.left, slots)
            self.sim.decode_loops[inst].wake()

        later(self.sim.env, m.seconds, land)

    def _apply_prefill(self, fault: Fault, rec: Recovery, record: dict[str, Any]) -> None:
        """A prefill instance: its batch in flight is cut, its queue routed to the others, it is held for the
        pause; a die-level policy then runs its batches slower until the repaired dies rejoin."""
        sim, inst, now = self.sim, fault.instance, self.sim.env.now
        if fault.kind in SLOWING_KINDS:
            self.prefill_factor[inst] *= rec.step_factor
            record["resume_at_s"], record["until_s"] = now, now + fault.duration_s
            later(sim.env, fault.duration_s, lambda: self._prefill_scale(inst, 1.0 / rec.step_factor))
            return
        self.prefill_hold_until[inst] = max(self.prefill_hold_until[inst], now + rec.pause_s)
        self.prefill_struck[inst] = now
        for rid in prefill_cut(sim, inst):
            self._cut(rid, record)
        for rid in drain_prefill_queue(sim, inst):
            sim._enqueue(rid)

        def resume() -> None:
            if rec.fenced and rec.reintegrate_after_s is not None:
                self.prefill_factor[inst] *= rec.step_factor
                later(sim.env, rec.reintegrate_after_s, lambda: self._prefill_rejoin(inst, rec, record))
            sim.prefill_loops[inst].wake()

        later(sim.env, rec.pause_s, resume)

    def _prefill_rejoin(self, inst: int, rec: Recovery, record: dict[str, Any]) -> None:
        now, pause = self.sim.env.now, rec.reintegration_pause_s
        record["reintegrate_at_s"], record["reintegration_pause_s"] = now, pause
        self.prefill_hold_until[inst] = max(self.prefill_hold_until[inst], now + pause)

        def rejoin() -> None:
            self._prefill_scale(inst, 1.0 / rec.step_factor)
            record["full_capacity_at_s"] = self.sim.env.now

        later(self.sim.env, pause, rejoin)

    def _prefill_scale(self, inst: int, factor: float) -> None:
        self.prefill_factor[inst] *= factor
        self.sim.prefill_loops[inst].wake()

    def _lose_cache(self, tier: str, record: dict[str, Any], until_s: float) -> None:
        """One node's part of an EMS tier (its DRAM with its CPU, or its SSD) is lost until it is repaired."""
        ems = self.sim.ems
        if ems is None:
            if record["kind"] == "ssd_loss":
                record["note"] = "the scenario has no EMS cache tier: the SSD held nothing it uses"
            return
        cache = ems.cache
        taken = lose_cache_share(cache, tier, 1.0 / ems.nodes)
        record[f"ems_{tier}_blocks_lost"] = taken
        later(self.sim.env, until_s, lambda: restore_cache_share(cache, tier, taken))

    def _reintegrate(self, inst: int, rec: Recovery, record: dict[str, Any]) -> None:
        """The repaired dies rejoin: the instance pauses for the membership change, then runs at full speed."""
        now = self.sim.env.now
        pause = rec.reintegration_pause_s
        record["reintegrate_at_s"] = now
        record["reintegration_pause_s"] = pause
        self.hold_until[inst] = max(self.hold_until[inst], now + pause)

        def rejoin() -> None:
            self.out[inst].difference_update(rec.fenced)
            self._fence(inst)
            self.factor[inst] /= rec.step_factor
            record["full_capacity_at_s"] = self.sim.env.now
            self.sim._admit_waiting()

        later(self.sim.env, pause, rejoin)

    def _fence(self, inst: int) -> None:
        fenced = self.sim.decodes[inst].fenced
        fenced[:] = False
        fenced[sorted(self.out[inst])] = True

    def _unslow(self, inst: int, factor: float) -> None:
        self.factor[inst] /= factor

    def _cut(self, rid: int, record: dict[str, Any] | None) -> None:
        """A request lost its KV (or its prefill): resubmitted (queued for prefill again) or counted failed."""
        sim = self.sim
        self.cut += 1
        if record is not None:
            record["cut"] += 1
        if self.spec.requests != "fail" and sim.listener is None:  # online, the client decides to retry
            sim.table.retry(rid)
            self.retried.add(rid)
            if record is not None:
                record["retried"] += 1
            sim._enqueue(rid)
            return
        sim.table.cancel(rid, sim.env.now)
        self.failed += 1
        if record is not None:
            record["failed"] += 1
        if sim.listener is not None:
            sim.listener.on_cut(rid, sim.env.now)
        sim.account_finished(1)

    def recovering_s(self) -> float:
        """Simulated seconds until some decode instance serves again, 0 while any does (serve's 503s)."""
        holds = [self.hold_s(i) for i in range(len(self.hold_until))]
        return min(holds) if all(h > 0 for h in holds) else 0.0
