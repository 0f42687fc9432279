"""Open-loop arrivals taken in batches rather than one event each. An arrival only joins a prefill queue, and
only prefill events read those queues (an instance taking its next batch, or one woken from sleep), so while
every prefill instance is awake the arrivals due before the next such event are taken when it comes, all at
once, with the clock times a timeout would have given them. While some instance sleeps the next arrival will
wake it, so it is an event of its own at its time, as before. Ties with a prefill event keep the order the
one-event-per-arrival engine gave them (its queue order: time, then the order events were scheduled), so a run
is the same to the bit either way."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol

import numpy as np
import simpy

from cloudmatrix.serving.prefill import PrefillQueue
from cloudmatrix.serving.requests import RequestTable
from cloudmatrix.serving.router import CacheAwareRouter
from cloudmatrix.sim.events import Sleeper, call_at


class Simulation(Protocol):
    """What the arrivals use of the simulation (sim/engine.py), named here so the modules do not import each
    other."""

    env: simpy.Environment
    table: RequestTable
    prefill_queues: list[PrefillQueue]
    prefill_busy: list[bool]
    prefill_loops: list[Sleeper]
    router: CacheAwareRouter | None

    def _hash_ids(self, rid: int) -> list[int] | None: ...


def clock_times(times: np.ndarray) -> np.ndarray:
    """The clock time each arrival is taken at: the previous one's plus the gap to its own, as a timeout sums
    it (its own time, unless rounding says otherwise), and never before the previous one."""
    times = np.asarray(times, dtype=np.float64)
    before = np.concatenate(([0.0], times[:-1]))
    if np.array_equal(before + (times - before), times) and bool(np.all(times > before)):
        return times.copy()  # every sum lands on the time itself
    out, now = [], 0.0
    for t in times.tolist():
        if t > now:
            now = now + (t - now)
        out.append(now)
    return np.array(out, dtype=np.float64)


class BatchedArrivals:
    def __init__(self, sim: Simulation, times: np.ndarray) -> None:
        self.sim = sim
        self.due = clock_times(times)
        self.next = 0  # the first arrival not yet taken
        self.armed = -1  # the arrival with an event on the clock (-1: none)
        self.lines = [q.queue for q in sim.prefill_queues]  # each instance's queue itself (never replaced)

    def start(self, _event: object = None) -> None:
        """The run's first event at time 0 (after the instances start): arrivals due then are taken."""
        self.take_through(self.sim.env.now)
        self.arm()

    def take_through(self, now: float) -> None:
        """Take every arrival due by ``now``, inclusive (those at ``now`` itself came before the event)."""
        self.take(int(self.due.searchsorted(now, "right")))

    def before_batch_end(self, now: float, mark: int) -> None:
        """A prefill batch ends at ``now``: the arrivals due before it are taken, and one due at ``now`` too if it
        was the next arrival when the batch started (its event was scheduled first), with those tied to it."""
        self.take(int(self.due.searchsorted(now, "left")))
        k = self.next
        if k == mark and k < self.due.size and self.due.item(k) == now:
            self.take_through(now)
        self.arm()

    def woken(self, now: float) -> None:
        """An instance woken by an arrival at ``now`` takes its batch after every arrival due by then."""
        self.take_through(now)
        self.arm()

    def arm(self) -> None:
        """While an instance sleeps, the next arrival (which may wake it) is an event at its time."""
        k = self.next
        if k < self.due.size and self.armed != k:
            for loop in self.sim.prefill_loops:  # (a loop: ``any`` over a generator costs more here)
                if loop.asleep:
                    call_at(self.sim.env, self.due.item(k), partial(self._due, k))
                    self.armed = k
                    return

    def _due(self, k: int, _event: object) -> None:
        if self.armed == k:
            self.armed = -1
        if self.next == k:  # not taken yet by a prefill event at the same time
            self.take_through(self.sim.env.now)
        self.arm()

    def take(self, end: int) -> None:
        """Arrivals [next, end) join the least-loaded (or the cache-aware router's) prefill queue, in order."""
        start = self.next
        if end <= start:
            return
        sim = self.sim
        sim.table.arrive_range(start, end, self.due[start:end])
        queues, loops, router = sim.prefill_queues, sim.prefill_loops, sim.router
        loads = _loads(queues, sim.prefill_busy)
        before = loads.copy()
        lines = self.lines  # each request pushed as ``PrefillQueue.push`` does; the sums after
        prompts = sim.table.input_len[start:end].tolist()
        asleep = False  # (a loop is woken here, never put to sleep: with none asleep, none is asked)
        for loop in loops:
            asleep = asleep or loop.asleep
        if router is None and not asleep:  # the common case: every instance busy, no router
            for rid, tokens in enumerate(prompts, start):
                inst = loads.index(min(loads))  # the lowest-numbered on a tie (router.least_loaded)
                loads[inst] += tokens
                lines[inst].append((rid, tokens))
        elif router is None:
            for rid, tokens in zip(range(start, end), prompts, strict=True):
                inst = loads.index(min(loads))  # the lowest-numbered on a tie (router.least_loaded)
                loads[inst] += tokens
                lines[inst].append((rid, tokens))
                loop = loops[inst]
                if loop.asleep:
                    loop.wake()
        else:
            for rid, tokens in zip(range(start, end), prompts, strict=True):
                hashes = sim._hash_ids(rid)
                inst = router.choose(loads, hashes[0] if hashes else None)
                loads[inst] += tokens
                lines[inst].append((rid, tokens))
                loop = loops[inst]
                if loop.asleep:
                    loop.wake()
        for queue, was, now in zip(queues, before, loads, strict=True):
            queue.queued_tokens += now - was
        self.next = end


def _loads(queues: Sequence[PrefillQueue], busy: Sequence[bool]) -> list[int]:
    """Prompt tokens each instance has queued, plus a batch's budget when it is busy (the routing load)."""
    return [q.queued_tokens + q.budget if b else q.queued_tokens for q, b in zip(queues, busy, strict=True)]
