"""Faults as events in the simulation (design.md §3 rule 11): at each fault the injector cuts the sequences
whose KV the fault loses (each retried or counted failed, never dropped silently), fences the lost dies from
admission, holds the instance's decode loop for the policy's pause and slows its steps by the degraded
factor until the repaired dies rejoin. The engine asks it two things: how long to hold an instance, and by
what factor to stretch a step."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

import numpy as np
import simpy

from cloudmatrix.errors import ConfigError
from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.requests import RequestTable, State
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.decode_side import Listener
from cloudmatrix.sim.fault_report import fault_metrics
from cloudmatrix.sim.fault_spec import SLOWING_KINDS, Fault, FaultsSpec, resolve
from cloudmatrix.sim.metrics import Recorder
from cloudmatrix.sim.recovery import Instance, Recovery, price
from cloudmatrix.sim.scenario import Scenario


class Simulation(Protocol):
    """What the injector uses of the simulation it serves (sim/engine.py), named here so the two modules do
    not import each other."""

    env: simpy.Environment
    s: Scenario
    costs: StepCosts
    decodes: list[DecodeBatch]
    rec: Recorder
    table: RequestTable
    listener: Listener | None

    def _admit_waiting(self) -> None: ...

    def _enqueue(self, rid: int) -> None: ...

    def account_finished(self, count: int) -> None: ...


class FaultInjector:
    def __init__(self, sim: Simulation, spec: FaultsSpec) -> None:
        s = sim.s
        if s.aggregated is not None or s.decode is None:
            raise ConfigError("faults: only disaggregated decode instances fail in this model (aggregated: not yet)")
        if s.decode.tp != 1:
            raise ConfigError(f"faults: decode.tp is {s.decode.tp}; faults need data-parallel attention (tp 1)")
        self.sim, self.spec = sim, spec
        hw = sim.costs.hw
        per_chip = hw.chip.num_dies
        self.faults = resolve(
            spec,
            instances=s.decode.instances,
            dies_per_instance=sim.decodes[0].num_dies,
            dies_per_chip=per_chip,
            dies_per_node=int(hw.system.chips_per_node.value) * per_chip,
            seed=s.seed,
            horizon_s=s.duration_s,
        )
        instance = Instance(hw, sim.costs.model, sim.costs.decode_deployment(), spec.recovery_stack)
        # each fault priced for its own dies (the instance keeps the degraded steps it priced by size)
        self.recoveries: list[Recovery] = [price(instance, f, spec.policy, spec.repair_s) for f in self.faults]
        pools = [p for p in (s.prefill, s.decode) if p is not None]
        self.idle_chips = hw.system.num_chips - sum(p.instances * p.chips for p in pools)
        n = s.decode.instances
        self.hold_until = [0.0] * n
        self.factor = [1.0] * n
        self.out: list[set[int]] = [set() for _ in range(n)]  # dies lost until they rejoin, per instance
        self.events: list[dict[str, Any]] = []  # one record per fault, filled as it unfolds
        self.retried: set[int] = set()
        self.failed = 0
        self.cut = 0

    def start(self) -> None:
        self.sim.env.process(self._run())

    # ---- what the engine asks -------------------------------------------------------------------------------
    def hold_s(self, inst: int) -> float:
        return max(self.hold_until[inst] - self.sim.env.now, 0.0)

    def step_factor(self, inst: int) -> float:
        return self.factor[inst]

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

    def _apply(self, fault: Fault, rec: Recovery) -> None:
        env, inst = self.sim.env, fault.instance
        now = env.now
        record: dict[str, Any] = {
            "at_s": now,
            "kind": fault.kind,
            "instance": inst,
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
        batch = self.sim.decodes[inst]
        if fault.kind in SLOWING_KINDS:
            self.factor[inst] *= rec.step_factor
            record["resume_at_s"] = now
            record["until_s"] = now + fault.duration_s
            env.timeout(fault.duration_s).callbacks.append(lambda _e: self._unslow(inst, rec.step_factor))
            return
        dies = np.arange(batch.num_dies) if rec.cut == "instance" else np.array(fault.dies)
        rids, left = batch.evict(dies)
        t = self.sim.table
        t.generated[rids] = t.output_len[rids] - left  # the batch held the counts while they decoded
        for rid in rids.tolist():
            self._cut(rid, record)
        if rec.cut == "dies":
            self.out[inst].update(fault.dies)
        batch.fenced[dies] = True  # no admissions while the instance (or the lost die) is out
        self.hold_until[inst] = max(self.hold_until[inst], now + rec.pause_s)
        env.timeout(rec.pause_s).callbacks.append(lambda _e: self._resume(inst, rec, record))

    def _resume(self, inst: int, rec: Recovery, record: dict[str, Any]) -> None:
        if rec.cut == "instance":
            self._fence(inst)  # restarted on a replacement NPU, or replaced by the standby
        else:
            self.factor[inst] *= rec.step_factor
            if rec.reintegrate_after_s is not None:
                self.sim.env.timeout(rec.reintegrate_after_s).callbacks.append(
                    lambda _e: self._reintegrate(inst, rec, record)
                )
        self.sim._admit_waiting()

    def _reintegrate(self, inst: int, rec: Recovery, record: dict[str, Any]) -> None:
        """The repaired dies rejoin: the instance pauses for the membership change, then runs at full speed."""
        now = self.sim.env.now
        pause = rec.reintegration_pause_s
        record["reintegrate_at_s"] = now
        record["reintegration_pause_s"] = pause
        self.hold_until[inst] = max(self.hold_until[inst], now + pause)

        def rejoin(_e: Any) -> None:
            self.out[inst].difference_update(rec.fenced)
            self._fence(inst)
            self.factor[inst] /= rec.step_factor
            record["full_capacity_at_s"] = self.sim.env.now
            self.sim._admit_waiting()

        self.sim.env.timeout(pause).callbacks.append(rejoin)

    def _fence(self, inst: int) -> None:
        fenced = self.sim.decodes[inst].fenced
        fenced[:] = False
        fenced[sorted(self.out[inst])] = True

    def _unslow(self, inst: int, factor: float) -> None:
        self.factor[inst] /= factor

    def _cut(self, rid: int, record: dict[str, Any] | None) -> None:
        """A sequence lost its KV: resubmitted (queued for prefill again) or counted failed."""
        sim = self.sim
        self.cut += 1
        if record is not None:
            record["cut"] += 1
        if self.spec.requests == "retry" and sim.listener is None:  # online, the client decides to retry
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
