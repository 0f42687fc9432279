"""The discrete-event simulation of peer-to-peer prefill/decode serving. SimPy runs the clock; serving/
decides; cost/ (through sim.costs) prices every prefill batch, KV transfer and decode step.

The instances are loops of callbacks on the clock (sim.events), not SimPy processes: a prefill instance takes
a batch, and when it ends takes the next or sleeps until a request is queued; a decode instance prices its
next step (or a stretch of steps, sim.decode_runner) and applies it when the clock reaches its end. Every
event that changes a decode batch (a KV transfer landing, anything else queued on the clock, such as a fault
scheduled from outside) ends a stretch before it: a stretch runs only up to the clock's next event."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import simpy

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.serving.mtp_spread import decode_work
from cloudmatrix.serving.prefill import PrefillQueue
from cloudmatrix.serving.requests import RequestTable, State, unservable
from cloudmatrix.serving.router import CacheAwareRouter, least_loaded
from cloudmatrix.sim.aggregated import AggregatedInstance
from cloudmatrix.sim.arrivals import BatchedArrivals
from cloudmatrix.sim.collector import collector_paused
from cloudmatrix.sim.context_cache import PrefixCache
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.decode_side import DecodeSide, Listener
from cloudmatrix.sim.events import Sleeper, call_at, call_later, call_urgent, run_until
from cloudmatrix.sim.fault_injector import FaultInjector
from cloudmatrix.sim.metrics import Recorder, SimResult
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.workload.rng import Lookahead, stream
from cloudmatrix.workload.spec import Workload, generate

Progress = Callable[[int, int], None]  # (finished, total)

ONLINE_TIMELINE_ROWS = 100_000  # decode steps and prefill batches an online run keeps (a few MB)


class Simulation(DecodeSide):
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
        self.next_closed = 0  # closed or capped loop: next request id to issue
        self.issues_on_finish = bool(self.workload.concurrency)  # a closed loop's client or a capped slot
        self.all_done = self.env.event()
        p, d = scenario.prefill, scenario.aggregated or scenario.decode
        assert d is not None
        pre = p.instances if p else 0
        self.prefill_queues = [PrefillQueue(p.chips * p.tokens_per_chip) for _ in range(pre)] if p else []
        self.prefill_busy = [False] * pre
        self.prefill_batches: list[list[int]] = [[] for _ in range(pre)]  # each instance's batch in flight
        self.prefill_loops = [Sleeper(self.env, partial(self._prefill_next, i)) for i in range(pre)]
        self.open: BatchedArrivals | None = None  # open-loop arrivals taken in batches (sim/arrivals.py)
        self.prefill_marks = [0] * pre  # the next arrival when each instance's batch in flight started
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
        self.decode_loops = [Sleeper(self.env, partial(self._decode_next, i)) for i in range(d.instances)]
        self.aggregated = AggregatedInstance.pool(self, self.decodes, scenario.aggregated)
        self.waiting_kv: deque[int] = deque()  # prefilled requests waiting for decode KV space
        hw, model, hash_block = self.costs.hw, self.costs.model, self.workload.hash_block_tokens
        self.ems = PrefixCache(scenario, hw, model, hash_block) if scenario.ems else None
        self.mtp_rng = Lookahead(stream(scenario.seed, "mtp_acceptance"))
        own = not listener and d.mtp and d.mtp_spread  # requests that accept at rates of their own
        self.decode_work = decode_work(self.table.output_len, d, stream(scenario.seed, "mtp_spread")) if own else None
        self.step_by_step = step_by_step  # the reference path: every decode step is its own event
        self.cancelled: set[int] = set()  # requests whose clients went away mid-flight
        self.submitted_hash_ids: dict[int, list[int]] = {}  # prefix hashes of requests submitted live
        self.cached_of: dict[int, int] = {}  # prompt tokens the EMS cache supplied, per live request
        self.arrival_times = np.zeros(0)  # the open loop's arrival times
        self.started = False
        self.whole_run = False  # run() to the end, rather than driven event by event (the emulator, tests)
        self.faults: FaultInjector | None = FaultInjector(self, scenario.faults) if scenario.faults else None
        for batch in self.decodes:
            batch.never_fenced = self.faults is None

    @property
    def decode_slots(self) -> int:
        return sum(b.num_dies * b.cap for b in self.decodes)

    def start(self) -> None:
        """Start the instances' loops (idempotent)."""
        if self.started:
            return
        self.started = True
        decode_loops = [inst.loop for inst in self.aggregated] or self.decode_loops  # co-located, else decode's own
        for loop in [*self.prefill_loops, *decode_loops]:
            loop.start()
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
            call_later(self.env, delay, partial(self._enqueue_due, rid))
        else:
            self._enqueue(rid)

    def _enqueue_due(self, rid: int, _event: object) -> None:
        self._enqueue(rid)

    def _enqueue(self, rid: int) -> None:
        if self.aggregated:
            agg = [inst.load() for inst in self.aggregated]
            self.aggregated[least_loaded(self.faults.route(agg, False) if self.faults else agg)].enqueue(rid)
            return
        tokens = self.table.input_len.item(rid)
        loads: list[float] = [
            q.queued_tokens + q.budget if busy else q.queued_tokens
            for q, busy in zip(self.prefill_queues, self.prefill_busy, strict=True)
        ]
        if self.faults:  # instances a fault holds are out of reach
            loads = self.faults.route(loads, True)
        if self.router is not None:
            hashes = self._hash_ids(rid)
            inst = self.router.choose(loads, hashes[0] if hashes else None)
        else:
            inst = least_loaded(loads)
        self.prefill_queues[inst].push(rid, tokens)
        self.prefill_loops[inst].wake()

    def _arrivals_from(self, rid: int) -> None:
        """The open loop: every request due by now arrives; the clock is set for the next one's time. A next
        arrival due before everything queued on the clock would be the clock's very next event, so it is
        taken here at once (the clock moved to its time), without a round through the event queue."""
        times, env = self.arrival_times, self.env
        while rid < len(times):
            t = times.item(rid)
            now = env.now
            if t > now:
                at = now + (t - now)  # as a timeout sums it
                if at >= env.peek():  # something else comes first: wait for this arrival's turn
                    call_at(env, at, partial(self._arrival_due, rid))
                    return
                env._now = at
            self._arrive(rid)
            rid += 1

    def _arrival_due(self, rid: int, _event: object) -> None:
        self._arrive(rid)  # its time as the clock sums it (the clock is not asked again)
        self._arrivals_from(rid + 1)

    def _issue_closed(self) -> None:
        """A client is free: it sends the next request, at once in a closed loop; under a capped open loop (a
        rate with a concurrency cap) not before the request is due, in the order they fall due."""
        rid = self.next_closed
        if rid < len(self.table):
            self.next_closed += 1
            due = self.workload.arrival_s
            if due is not None and due.item(rid) > self.env.now:
                call_at(self.env, due.item(rid), partial(self._arrival_due, rid))
            else:
                self._arrive(rid)

    # ---- prefill ----------------------------------------------------------------------------------------
    def _prefill_next(self, inst: int, _event: object = None) -> None:
        """An idle prefill instance takes its next batch, or sleeps until a request is queued."""
        queue = self.prefill_queues[inst]
        if not queue:
            self.prefill_loops[inst].asleep = True
            if self.open:
                self.open.arm()
            return
        factor = 1.0
        if self.faults:
            hold = self.faults.prefill_hold_s(inst)
            if hold > 0:  # a fault stopped the instance: what it holds waits out the recovery
                call_later(self.env, hold, partial(self._prefill_next, inst))
                return
            factor = self.faults.prefill_step_factor(inst)
        rids, tokens = queue.take_batch()
        now = self.env.now
        self.table.start_prefills(rids, now)
        dur = self._prefill_batch_s(rids, tokens) * factor
        self.prefill_busy[inst] = True
        self.prefill_batches[inst] = rids
        self.prefill_marks[inst] = self.open.next if self.open else 0
        call_later(self.env, dur, partial(self._prefill_done, inst, rids, tokens, now, dur))

    def _prefill_woken(self, inst: int, _event: object) -> None:
        cast(BatchedArrivals, self.open).woken(self.env.now)  # the loops resume here only with batched arrivals
        self._prefill_next(inst)

    def _prefill_done(self, inst: int, rids: list[int], tokens: int, start: float, dur: float, _event: object) -> None:
        if self.open:
            self.open.before_batch_end(self.env.now, self.prefill_marks[inst])
        self.prefill_busy[inst] = False
        if self.faults and self.faults.prefill_cut(inst, start):  # a fault cut it: its requests were handled
            self._prefill_next(inst)
            return
        self.rec.prefill_batch(inst, start, dur, tokens)
        now = self.env.now
        if self.ems:  # new blocks are stored asynchronously once the prefill has them (P3 §4.4.2)
            for rid in rids:
                self.ems.store(self._hash_ids(rid))
        self.table.end_prefills(rids, now)
        if self.cancelled:
            for rid in rids:
                if rid in self.cancelled:
                    self.cancelled.discard(rid)
                    self.table.cancel(rid, now)
                else:
                    self.waiting_kv.append(rid)
        else:
            self.waiting_kv.extend(rids)
        self._admit_waiting()
        if self.observer:
            self.observer(self)
        self._prefill_next(inst)

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

    def _finish(self, rids: list[int] | np.ndarray) -> None:
        if self.whole_run and not self.observer:  # nothing reads the table before the run ends
            self.table.finish_later(rids, self.env.now)
        else:
            self.table.finish(rids, self.env.now)
        self.finished += len(rids)
        if self.listener:
            for rid in rids if isinstance(rids, list) else rids.tolist():
                self.listener.on_finish(rid, self.env.now)
        if self.progress:
            self.progress(self.finished, len(self.table))
        if self.waiting_kv:
            self._admit_waiting()
        if self.issues_on_finish:  # a closed loop's client, or a capped open loop's slot, is free
            for _ in range(len(rids)):
                self._issue_closed()
        if self.finished >= self.table.n and not self.all_done.triggered:
            self.all_done.succeed()

    def account_finished(self, count: int) -> None:
        """Requests that ended without finishing (a fault failed them) count toward the end of the run."""
        self.finished += count
        if self.progress:
            self.progress(self.finished, len(self.table))
        if self.workload.concurrency:
            for _ in range(count):
                self._issue_closed()
        if self.finished >= len(self.table) and not self.all_done.triggered:
            self.all_done.succeed()

    # ---- run --------------------------------------------------------------------------------------------
    def run(self) -> SimResult:
        self.whole_run = not self.listener
        if not (self.started or self.listener or self.observer or self.faults):
            self.table.defer()  # nothing reads the table before the run ends: its stamps are written in bulk
        plain = not (self.started or self.listener or self.observer or self.faults or self.costs.request_overhead_s)
        self.start()  # the loops' first look at their queues is not a wake-up: they start as before
        # an open loop's arrivals come on their own; a capped one's are sent as its slots free (_issue_closed)
        due = None if self.workload.concurrency else self.workload.arrival_s
        if due is not None and plain and self.prefill_queues and not self.aggregated:
            self.open = BatchedArrivals(self, due)
            for i, loop in enumerate(self.prefill_loops):
                loop.resume = partial(self._prefill_woken, i)
            call_urgent(self.env, self.open.start)
        elif due is not None:
            self.arrival_times = due
            call_urgent(self.env, lambda _event: self._arrivals_from(0))  # where a process would start
        else:
            for _ in range(min(self.workload.concurrency or 1, len(self.table))):
                self._issue_closed()
        stop: Any = self.all_done
        if self.s.duration_s is not None:
            stop = self.all_done | self.env.timeout(self.s.duration_s)
        try:
            with collector_paused(self.whole_run):  # nearly nothing a run allocates is in a cycle (sim/collector.py)
                run_until(self.env, stop)
        except RuntimeError as e:  # simpy: no event left before every request finished
            if "No scheduled events left" not in str(e):
                raise
            self.table.settle()
            raise unservable(self.table) from None
        if self.open:  # a run cut at duration_s: the arrivals due by then
            self.open.take_through(self.env.now)
        return self.result()

    def result(self) -> SimResult:
        self.table.settle()
        for batch in self.decodes:  # sequences still decoding (a run cut at duration_s): their tokens so far
            rids, remaining = batch.decoding()
            self.table.generated[rids] = self.table.output_len[rids] - remaining
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


def simulate(scenario: Scenario, progress: Progress | None = None, step_by_step: bool = False) -> SimResult:
    return Simulation(scenario, progress, step_by_step=step_by_step).run()
