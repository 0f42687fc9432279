"""The discrete-event simulation of peer-to-peer prefill/decode serving. SimPy runs the clock; serving/
decides; cost/ (through sim.costs) prices every prefill batch, KV transfer and decode step."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import simpy

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.serving.prefill import PrefillQueue
from cloudmatrix.serving.requests import RequestTable, State, unservable
from cloudmatrix.serving.router import CacheAwareRouter, least_loaded
from cloudmatrix.sim.aggregated import AggregatedInstance
from cloudmatrix.sim.context_cache import PrefixCache
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.decode_runner import Stretch, commit, plan
from cloudmatrix.sim.fault_injector import FaultInjector
from cloudmatrix.sim.metrics import Recorder, SimResult
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.workload.rng import Lookahead, stream
from cloudmatrix.workload.spec import Workload, generate

Progress = Callable[[int, int], None]  # (finished, total)

ONLINE_TIMELINE_ROWS = 100_000  # decode steps and prefill batches an online run keeps (a few MB)


class Listener(Protocol):
    """Receives token releases as they happen in simulated time (the real-time emulator streams them)."""

    def on_tokens(self, rid: int, tokens: int, now: float) -> None: ...

    def on_finish(self, rid: int, now: float) -> None: ...

    def on_cut(self, rid: int, now: float) -> None: ...  # a fault lost the request's KV: its stream ends


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        progress: Progress | None = None,
        observer: Callable[[Simulation], None] | None = None,
        workload: Workload | None = None,
        listener: Listener | None = None,
        step_by_step: bool = False,
    ) -> None:
        self.s = scenario
        self.observer = observer  # called after every prefill batch, decode step and stretch
        self.listener = listener
        self.costs = StepCosts(scenario)
        self.costs.check()
        base = Path(scenario.base_dir) if scenario.base_dir else None
        self.workload = workload or generate(scenario.workload, scenario.seed, scenario.requests, base)
        self.table = RequestTable(self.workload.input_len, self.workload.output_len)
        self.env = simpy.Environment()
        self.rec = Recorder(limit=ONLINE_TIMELINE_ROWS if listener else None)
        self.progress = progress
        self.finished = 0
        self.next_closed = 0  # closed loop: next request id to issue
        self.all_done = self.env.event()
        p, d = scenario.prefill, scenario.aggregated or scenario.decode
        assert d is not None
        pre = p.instances if p else 0
        self.prefill_queues = [PrefillQueue(p.chips * p.tokens_per_chip) for _ in range(pre)] if p else []
        self.prefill_busy = [False] * pre
        self.prefill_wake = [self.env.event() for _ in range(pre)]
        cache_aware = p is not None and p.router == "cache-aware"
        self.router = CacheAwareRouter(slack_tokens=p.chips * p.tokens_per_chip) if p and cache_aware else None
        # decode ranks: dies (data-parallel attention) or tensor-parallel groups of d.tp dies
        ranks = d.chips * self.costs.hw.chip.num_dies // d.tp
        seqs_per_rank = max(d.batch_per_chip * d.tp // self.costs.hw.chip.num_dies, 1)
        capacity = self.costs.kv_capacity_blocks(d.kv_block_tokens)
        self.decodes = [
            DecodeBatch(ranks, seqs_per_rank, KvBlockPools(ranks, capacity, d.kv_block_tokens), d.mtp, d.mtp_acceptance)
            for _ in range(d.instances)
        ]
        self.decode_wake = [self.env.event() for _ in range(d.instances)]
        a = scenario.aggregated
        self.aggregated = (
            [AggregatedInstance(self, i, b, a.chips * a.chunk_tokens_per_chip) for i, b in enumerate(self.decodes)]
            if a
            else []
        )
        self.waiting_kv: deque[int] = deque()  # prefilled requests waiting for decode KV space
        self.ems = (
            PrefixCache(scenario, self.costs.hw, self.costs.model, self.workload.hash_block_tokens)
            if scenario.ems
            else None
        )
        self.mtp_rng = Lookahead(stream(scenario.seed, "mtp_acceptance"))
        self.step_by_step = step_by_step  # the reference path: every decode step is its own event
        self.cancelled: set[int] = set()  # requests whose clients went away mid-flight
        self.submitted_hash_ids: dict[int, list[int]] = {}  # prefix hashes of requests submitted live
        self.cached_of: dict[int, int] = {}  # prompt tokens the EMS cache supplied, per live request
        self.started = False
        self.faults = FaultInjector(self, scenario.faults) if scenario.faults else None

    @property
    def decode_slots(self) -> int:
        return sum(b.num_dies * b.cap for b in self.decodes)

    def start(self) -> None:
        """Register the instance processes (idempotent)."""
        if self.started:
            return
        self.started = True
        for i in range(len(self.prefill_queues)):
            self.env.process(self._prefill(i))
        for inst in self.aggregated:
            self.env.process(inst.process())
        if not self.aggregated:
            for i in range(len(self.decodes)):
                self.env.process(self._decode(i))
        if self.faults:
            self.faults.start()

    # ---- online use (the emulator) -----------------------------------------------------------------------
    def submit(self, input_len: int, output_len: int, hash_ids: list[int] | None = None) -> int:
        """A new request arriving now, with its prompt's prefix-block hashes if known; returns its id."""
        self.start()
        rid = self.table.append(input_len, output_len)
        if hash_ids:
            self.submitted_hash_ids[rid] = hash_ids
        self._arrive(rid)
        return rid

    def recycle(self, rid: int) -> bool:
        """An online request is over and its timeline has been read: its row may serve a new request, so a
        server that runs for days keeps a table the size of its live requests. False while the simulation
        still holds it (cancelled mid-prefill or mid-transfer: it is freed when that step ends)."""
        if rid in self.cancelled or int(self.table.state[rid]) not in (State.DONE, State.CANCELLED):
            return False
        self.submitted_hash_ids.pop(rid, None)
        self.cached_of.pop(rid, None)
        self.table.recycle(rid)
        return True

    def cancel(self, rid: int) -> None:
        """The client went away: drop the request wherever it is and free what it holds."""
        state = int(self.table.state[rid])
        if state in (-1, State.DONE, State.CANCELLED):
            return
        now = self.env.now
        if state == State.QUEUED and any(q.remove(rid) for q in self.prefill_queues):
            self.table.cancel(rid, now)
        elif state == State.KV_TRANSFER and rid in self.waiting_kv:
            self.waiting_kv.remove(rid)
            self.table.cancel(rid, now)
        elif state == State.DECODING:
            for batch in self.decodes:
                slot = batch.slot_of(rid)
                if slot is not None:
                    batch.release(slot)
            self.table.cancel(rid, now)
            self._admit_waiting()
        else:  # mid-prefill or mid-transfer: freed when that finishes
            self.cancelled.add(rid)

    # ---- arrivals ----------------------------------------------------------------------------------------
    def _arrive(self, rid: int) -> None:
        """A request arrives: after the stack's front-end time (tokenisation, routing) it joins a queue."""
        self.table.arrive(rid, self.env.now)
        delay = self.costs.request_overhead_s
        if delay > 0:
            self.env.timeout(delay).callbacks.append(lambda _event: self._enqueue(rid))
        else:
            self._enqueue(rid)

    def _enqueue(self, rid: int) -> None:
        if self.aggregated:
            self.aggregated[least_loaded([inst.load() for inst in self.aggregated])].enqueue(rid)
            return
        tokens = int(self.table.input_len[rid])
        loads = [
            q.queued_tokens + (q.budget if busy else 0)
            for q, busy in zip(self.prefill_queues, self.prefill_busy, strict=True)
        ]
        if self.router is not None:
            hashes = self._hash_ids(rid)
            prefix = hashes[0] if hashes else None
            inst = self.router.choose(loads, prefix)
        else:
            inst = least_loaded(loads)
        self.prefill_queues[inst].push(rid, tokens)
        _wake(self.prefill_wake, inst)

    def _open_loop(self, times: np.ndarray) -> Generator[Any, Any, None]:
        for rid, t in enumerate(times):
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self._arrive(rid)

    def _issue_closed(self) -> None:
        if self.next_closed < len(self.table):
            self._arrive(self.next_closed)
            self.next_closed += 1

    # ---- prefill ----------------------------------------------------------------------------------------
    def _prefill(self, inst: int) -> Generator[Any, Any, None]:
        queue = self.prefill_queues[inst]
        while True:
            if not queue:
                yield self.prefill_wake[inst]
                continue
            batch = queue.next_batch()
            rids = [rid for rid, _ in batch]
            tokens = sum(t for _, t in batch)
            now = self.env.now
            for rid in rids:
                self.table.start_prefill(rid, now)
            dur = self._prefill_batch_s(rids, tokens)
            self.prefill_busy[inst] = True
            yield self.env.timeout(dur)
            self.prefill_busy[inst] = False
            self.rec.prefill_batch(inst, now, dur, tokens)
            for rid in rids:
                if self.ems:  # new blocks are stored asynchronously once the prefill has them (P3 §4.4.2)
                    self.ems.store(self._hash_ids(rid))
                self.table.end_prefill(rid, self.env.now)
                if rid in self.cancelled:
                    self.cancelled.discard(rid)
                    self.table.cancel(rid, self.env.now)
                else:
                    self.waiting_kv.append(rid)
            self._admit_waiting()
            if self.observer:
                self.observer(self)

    def _hash_ids(self, rid: int) -> list[int] | None:
        if rid in self.submitted_hash_ids:
            return self.submitted_hash_ids[rid]
        hashes = self.workload.hash_ids
        return hashes[rid] if hashes and rid < len(hashes) else None

    def _prefill_batch_s(self, rids: list[int], tokens: int) -> float:
        """The batch priced on its prompt tokens, less those whose KV the EMS cache supplies."""
        if self.ems is None:
            return self.costs.prefill_batch_s(tokens, tokens / len(rids))
        cached = ssd = 0
        for rid in rids:
            c, s = self.ems.lookup(self._hash_ids(rid), int(self.table.input_len[rid]))
            cached, ssd = cached + c, ssd + s
            if rid in self.submitted_hash_ids:
                self.cached_of[rid] = c
        return self.costs.prefill_batch_s(tokens, tokens / len(rids), cached) + self.ems.ssd_read_s(ssd)

    # ---- decode admission and KV transfer -----------------------------------------------------------------
    def _admit_waiting(self) -> None:
        """FIFO admission into decode: a request waits until some die has a slot and its KV blocks."""
        while self.waiting_kv:
            rid = self.waiting_kv[0]
            length = int(self.table.input_len[rid] + self.table.output_len[rid])
            placed = None
            for i, batch in enumerate(self.decodes):
                blocks = batch.pools.blocks_for(length)
                die = batch.choose_die(blocks)
                if die is not None:
                    placed = (i, batch.reserve(rid, die, blocks))
                    break
            if placed is None:
                return
            self.waiting_kv.popleft()
            self.table.admit_decode(rid, self.env.now)
            arrival = self.env.timeout(self.costs.kv_transfer_s(int(self.table.input_len[rid])))
            arrival.callbacks.append(functools.partial(self._kv_arrived, rid, *placed))

    def _kv_arrived(self, rid: int, inst: int, slot: int, _event: simpy.Event) -> None:
        if self.faults and self.faults.intercept(rid, inst, slot):
            return
        if rid in self.cancelled:
            self.cancelled.discard(rid)
            self.decodes[inst].release(slot)
            self.table.cancel(rid, self.env.now)
            self._admit_waiting()
            return
        self.table.start_decode(rid, self.env.now)
        if self.listener:
            self.listener.on_tokens(rid, 1, self.env.now)  # the prefill's token, delivered with the KV cache
        remaining = int(self.table.output_len[rid]) - 1  # the prefill produced the first token
        if remaining <= 0:  # a one-token answer is complete once its first token is delivered
            self.decodes[inst].release(slot)
            self._finish(np.array([rid]))
            return
        self.decodes[inst].activate(slot, int(self.table.input_len[rid]) + 1, remaining)
        _wake(self.decode_wake, inst)

    # ---- decode -----------------------------------------------------------------------------------------
    def _decode(self, inst: int) -> Generator[Any, Any, None]:
        batch = self.decodes[inst]
        while True:
            if batch.num_active == 0:
                yield self.decode_wake[inst]
                continue
            hold, factor = (self.faults.hold_s(inst), self.faults.step_factor(inst)) if self.faults else (0.0, 1.0)
            if hold > 0:  # a fault stopped the instance: its sequences wait out the recovery
                yield self.env.timeout(hold)
                continue
            seqs, mean_kv = batch.shape()
            dur = self.costs.decode_step_s(seqs, mean_kv) * factor
            start = self.env.now
            stretch = self._stretch(batch, dur) if factor == 1.0 else None
            if stretch is not None:
                yield self.env.timeout(stretch.delay_s)
                finished = commit(stretch, batch, self.mtp_rng, self.table.generated, self.rec, inst, stretch.idx.size)
            else:
                yield self.env.timeout(dur)
                finished = self._step(inst, start, dur)
            if finished.size:
                self._finish(finished)
            if self.observer:
                self.observer(self)

    def _stretch(self, batch: DecodeBatch, first_s: float) -> Stretch | None:
        """Steps to take in one computation, unless the run is step by step (the reference path) or online."""
        if self.step_by_step or self.listener:
            return None
        return plan(batch, self.costs, self.mtp_rng, self.env.now, self.env.peek(), first_s)

    def _step(self, inst: int, start: float, dur: float) -> np.ndarray:
        """One decode step that just ended; returns the request ids it finished."""
        batch = self.decodes[inst]
        active = batch.num_active
        stepped, gained, finished = batch.step(self.mtp_rng)
        self.table.generated[stepped] += gained
        tokens = int(gained.sum())
        if self.listener:
            for rid, n in zip(stepped.tolist(), gained.tolist(), strict=True):
                self.listener.on_tokens(rid, n, self.env.now)
        occupancy = float(batch.pools.used.sum() / (batch.pools.capacity * batch.num_dies))
        self.rec.decode_step(inst, start, dur, active, tokens, occupancy)
        return finished

    def _finish(self, rids: np.ndarray) -> None:
        self.table.finish(rids, self.env.now)
        self.finished += len(rids)
        if self.listener:
            for rid in rids.tolist():
                self.listener.on_finish(rid, self.env.now)
        if self.progress:
            self.progress(self.finished, len(self.table))
        self._admit_waiting()
        if self.workload.arrival_s is None and self.workload.concurrency:
            for _ in range(len(rids)):
                self._issue_closed()
        if self.finished >= len(self.table) and not self.all_done.triggered:
            self.all_done.succeed()

    def account_finished(self, count: int) -> None:
        """Requests that ended without finishing (a fault failed them) count toward the end of the run."""
        self.finished += count
        if self.progress:
            self.progress(self.finished, len(self.table))
        if self.workload.arrival_s is None and self.workload.concurrency:
            for _ in range(count):
                self._issue_closed()
        if self.finished >= len(self.table) and not self.all_done.triggered:
            self.all_done.succeed()

    # ---- run --------------------------------------------------------------------------------------------
    def run(self) -> SimResult:
        self.start()
        if self.workload.arrival_s is not None:
            self.env.process(self._open_loop(self.workload.arrival_s))
        else:
            for _ in range(min(self.workload.concurrency or 1, len(self.table))):
                self._issue_closed()
        stop: Any = self.all_done
        if self.s.duration_s is not None:
            stop = self.all_done | self.env.timeout(self.s.duration_s)
        try:
            self.env.run(until=stop)
        except RuntimeError as e:  # simpy: no event left before every request finished
            if "No scheduled events left" not in str(e):
                raise
            raise unservable(self.table) from None
        return self.result()

    def result(self) -> SimResult:
        d = self.s.aggregated or self.s.decode
        p = self.s.aggregated or self.s.prefill
        assert p is not None and d is not None
        return SimResult(
            scenario=self.s.name,
            system=self.s.system,
            stack=self.costs.stack or "",
            decode_slots=self.decode_slots,
            table=self.table,
            recorder=self.rec,
            sim_time_s=float(self.env.now),
            prefill_chips=p.chips * p.instances,
            decode_chips=getattr(d, "total_chips", d.chips) * d.instances,
            prefill_instances=p.instances,
            decode_instances=d.instances,
            ttft_slo_s=self.s.slo.ttft_ms / 1e3,
            tpot_slo_s=self.s.slo.tpot_ms / 1e3,
            ems=self.ems.stats() if self.ems else None,
            faults=self.faults.report(float(self.env.now)) if self.faults else None,
        )


def _wake(events: list[simpy.Event], i: int) -> None:
    """Trigger a sleeping process's wake-up event and arm a fresh one."""
    ev = events[i]
    if not ev.triggered:
        ev.succeed()
        events[i] = ev.env.event()


def simulate(scenario: Scenario, progress: Progress | None = None, step_by_step: bool = False) -> SimResult:
    return Simulation(scenario, progress, step_by_step=step_by_step).run()
