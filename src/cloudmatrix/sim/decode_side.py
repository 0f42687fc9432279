"""The decode side of the disaggregated simulation (sim/engine.py): FIFO admission into the decode batches,
the KV transfer from prefill, and each decode instance's loop of steps or stretches of steps. A part of
``Simulation``, kept here so each module holds one side of the deployment."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from itertools import islice
from operator import add
from typing import Protocol

import numpy as np
import simpy

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.requests import RequestTable
from cloudmatrix.sim.costs import KV_BUCKET_TOKENS, StepCosts
from cloudmatrix.sim.decode_runner import Stretch, commit, plan, plan_floor
from cloudmatrix.sim.events import Sleeper, call_at, call_later
from cloudmatrix.sim.metrics import Recorder
from cloudmatrix.workload.rng import Lookahead

ADMIT_GROUP = 32  # waiting requests tried for decode admission at a time


class Landing:
    """KV transfers of one decode instance that land at one time, in admission order, with their lengths."""

    __slots__ = ("outputs", "prompts", "rids", "slots")

    def __init__(self) -> None:
        self.rids: list[int] = []
        self.slots: list[int] = []
        self.prompts: list[int] = []
        self.outputs: list[int] = []

    def add(self, rids: list[int], slots: list[int], prompts: list[int], outputs: list[int]) -> None:
        self.rids += rids
        self.slots += slots
        self.prompts += prompts
        self.outputs += outputs


class Faults(Protocol):
    """What the decode side asks of the fault injector (sim/fault_injector.py), named here so the two modules do
    not import each other."""

    def intercept(self, rid: int, inst: int, slot: int) -> bool: ...

    def hold_s(self, inst: int) -> float: ...

    def step_factor(self, inst: int) -> float: ...


class Listener(Protocol):
    """Receives token releases as they happen in simulated time (the real-time emulator streams them)."""

    def on_tokens(self, rid: int, tokens: int, now: float) -> None: ...

    def on_finish(self, rid: int, now: float) -> None: ...

    def on_cut(self, rid: int, now: float) -> None: ...  # a fault lost the request's KV: its stream ends


class DecodeSide:
    """Admission, KV transfer and decode steps; the state they use is the simulation's (set up there)."""

    env: simpy.Environment
    table: RequestTable
    costs: StepCosts
    rec: Recorder
    mtp_rng: Lookahead
    decodes: list[DecodeBatch]
    decode_loops: list[Sleeper]
    waiting_kv: deque[int]
    cancelled: set[int]
    listener: Listener | None
    observer: Callable[..., None] | None
    step_by_step: bool
    whole_run: bool
    faults: Faults | None
    decode_work: np.ndarray | None  # each request's decode tokens where acceptance differs by request
    finished: int
    all_done: simpy.Event
    progress: Callable[[int, int], None] | None
    issues_on_finish: bool

    def _finish(self, rids: list[int] | np.ndarray) -> None:
        raise NotImplementedError

    # ---- decode admission and KV transfer -----------------------------------------------------------------
    def decode_left(self, rid: int) -> int:
        """Tokens request ``rid`` decodes after the prefill's first token, at the batch's acceptance (scaled by
        its own where requests accept at rates of their own: serving/mtp_spread.py; a request submitted live
        decodes at the common rate)."""
        work = self.decode_work
        return self.table.output_len.item(rid) - 1 if work is None or rid >= work.size else work.item(rid)

    def decode_lefts(self, rids: list[int], outputs: list[int]) -> list[int]:
        """``decode_left`` of each of ``rids``, whose output lengths are ``outputs``."""
        work = self.decode_work
        if work is None:
            return [n - 1 for n in outputs]
        return list(map(self.decode_left, rids)) if max(rids) >= work.size else list(map(work.item, rids))

    def _admit_waiting(self) -> None:
        """FIFO admission into decode: a request waits until some die has a slot and its KV blocks. The
        transfers started together that land at the same time land as one event, in admission order."""
        waiting = self.waiting_kv
        if not waiting:
            return
        if len(self.decodes) == 1:
            self._admit_into_one()
            return
        table, now, decodes, transfer_s = self.table, self.env.now, self.decodes, self.costs.kv_transfer_s
        input_len, output_len = table.input_len, table.output_len
        admitted: list[int] = []
        landing: dict[float, list[tuple[int, int, int]]] = {}
        intakes = [self._intake_s(batch) for batch in decodes]
        while waiting:
            rid = waiting[0]
            prompt = input_len.item(rid)
            length = prompt + output_len.item(rid)
            placed = None
            for i, batch in enumerate(decodes):
                slot = batch.admit(rid, length)
                if slot is not None:
                    placed = (rid, i, slot)
                    break
            if placed is None:
                break
            waiting.popleft()
            admitted.append(rid)
            at = now + transfer_s(prompt) + intakes[placed[1]]  # as a timeout sums it
            landing.setdefault(at, []).append(placed)
        if admitted:
            table.admit_decodes(admitted, now)
        for at, group in landing.items():  # no other event was scheduled meanwhile: their order is kept
            call_at(self.env, at, partial(self._kv_landed, group))

    def _admit_into_one(self) -> None:
        """``_admit_waiting`` with one decode instance: the waiting requests are admitted a group at a time
        (the same choices, in the same order), and their transfers grouped by landing time as there. A group
        keeps its requests' lengths, read once here, for its landing (``_landed_in_one``)."""
        waiting, table, now, batch = self.waiting_kv, self.table, self.env.now, self.decodes[0]
        transfer_s, input_len, output_len = self.costs.kv_transfer_s, table.input_len, table.output_len
        intake = self._intake_s(batch)
        landing: dict[float, Landing] = {}
        lands: dict[int, Landing] = {}  # the group by prompt length (prompts of a workload share a few lengths)
        land = partial(self._landing, landing, lands)
        while waiting and batch.free_slots:
            rids = list(waiting) if len(waiting) <= ADMIT_GROUP else list(islice(waiting, ADMIT_GROUP))
            prompts = list(map(input_len.item, rids))  # a few: read one by one (a numpy call costs more here)
            outputs = list(map(output_len.item, rids))
            slots = batch.admit_all(rids, list(map(add, prompts, outputs)))
            if not slots:
                break
            k = len(slots)
            whole = k == len(rids)  # (every one taken: the usual case)
            if not whole:
                rids, prompts, outputs = rids[:k], prompts[:k], outputs[:k]
            if k == len(waiting):
                waiting.clear()
            else:
                for _ in rids:
                    waiting.popleft()
            table.admit_decodes(rids, now)
            first = prompts[0]
            if prompts.count(first) == k:  # one prompt length: one group
                group = lands.get(first) or land(first, now + transfer_s(first) + intake)
                group.add(rids, slots, prompts, outputs)
            else:
                for i in range(k):
                    prompt = prompts[i]
                    group = lands.get(prompt) or land(prompt, now + transfer_s(prompt) + intake)
                    group.add(rids[i : i + 1], slots[i : i + 1], [prompt], outputs[i : i + 1])
            if not whole:
                break
        for at_s, group in landing.items():  # no other event was scheduled meanwhile: their order is kept
            call_at(self.env, at_s, partial(self._landed_in_one, group))

    def _intake_s(self, batch: DecodeBatch) -> float:
        """The decode engine's wait from a request's KV landing to its first token, at the batch's shape now
        (sim/costs.py ``intake_s``; 0 for a stack that states none): the request lands, and joins, then."""
        if not self.costs.intake_steps:
            return 0.0
        return self.costs.intake_s(*batch.shape()) if batch.num_active else self.costs.intake_s(0, 0.0)

    @staticmethod
    def _landing(landing: dict[float, Landing], lands: dict[int, Landing], prompt: int, at_s: float) -> Landing:
        """The group landing at ``at_s`` (a timeout's sum), kept for ``prompt``'s length too."""
        group = landing.get(at_s)
        if group is None:
            group = landing[at_s] = Landing()
        lands[prompt] = group
        return group

    def _landed_in_one(self, group: Landing, _event: object) -> None:
        """``_kv_landed`` for a group of ``_admit_into_one``: its lengths come with it."""
        if self.faults or self.cancelled or self.listener:
            for rid, slot in zip(group.rids, group.slots, strict=True):
                self._kv_arrived(rid, 0, slot)
            return
        now, rids = self.env.now, group.rids
        self.table.start_decodes(rids, now)  # nothing else can touch these requests meanwhile
        lefts = self.decode_lefts(rids, group.outputs)
        batch = self.decodes[0]
        if min(lefts) > 0:  # every one decodes: they join the batch together
            batch.activate_all(group.slots, [p + 1 for p in group.prompts], lefts)
            self.decode_loops[0].wake()
            return
        for rid, slot, prompt, left in zip(rids, group.slots, group.prompts, lefts, strict=True):
            if left <= 0:  # a one-token answer is complete once its first token is delivered
                batch.release(slot)
                self._finish(np.array([rid]))
                continue
            batch.activate(slot, prompt + 1, left)
            self.decode_loops[0].wake()

    def _kv_landed(self, group: list[tuple[int, int, int]], _event: object) -> None:
        if self.faults or self.cancelled or self.listener:
            for rid, inst, slot in group:
                self._kv_arrived(rid, inst, slot)
            return
        # nothing else can touch these requests meanwhile: their first tokens are stamped together
        now, table = self.env.now, self.table
        rids = [rid for rid, _, _ in group]
        table.start_decodes(rids, now)
        input_len, output_len = table.input_len, table.output_len
        if len(self.decodes) == 1:
            lefts = self.decode_lefts(rids, list(map(output_len.item, rids)))
            if min(lefts) > 0:  # every one decodes: they join the batch together
                contexts = [p + 1 for p in map(input_len.item, rids)]
                self.decodes[0].activate_all([slot for _, _, slot in group], contexts, lefts)
                self.decode_loops[0].wake()
                return
        for rid, inst, slot in group:
            remaining = self.decode_left(rid)
            if remaining <= 0:  # a one-token answer is complete once its first token is delivered
                self.decodes[inst].release(slot)
                self._finish(np.array([rid]))
                continue
            self.decodes[inst].activate(slot, input_len.item(rid) + 1, remaining)
            self.decode_loops[inst].wake()

    def _kv_arrived(self, rid: int, inst: int, slot: int) -> None:
        if self.faults and self.faults.intercept(rid, inst, slot):  # landed on a die a fault took out
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
        remaining = self.decode_left(rid)
        if remaining <= 0:  # a one-token answer is complete once its first token is delivered
            self.decodes[inst].release(slot)
            self._finish(np.array([rid]))
            return
        self.decodes[inst].activate(slot, int(self.table.input_len[rid]) + 1, remaining)
        self.decode_loops[inst].wake()

    # ---- decode -----------------------------------------------------------------------------------------
    def _decode_next(self, inst: int, _event: object = None) -> None:
        """Price the batch's next step, or the stretch of steps up to the clock's next event, and apply it
        when the clock reaches its end; an empty batch sleeps until a sequence joins. A fault holds the
        instance for its recovery's pause (checked again after it) and slows its steps while degraded. A
        step that would end before every queued event is the clock's next event: in a whole run it is taken
        here, the clock set to its end as SimPy would set it, rather than queued and popped (``inline``)."""
        if self._inline():
            self._decode_inline(inst)
            return
        batch, env = self.decodes[inst], self.env
        if batch.num_active == 0:
            self.decode_loops[inst].asleep = True
            return
        factor = 1.0
        if self.faults:
            hold = self.faults.hold_s(inst)
            if hold > 0:  # a fault stopped the instance: its sequences wait out the recovery
                call_later(env, hold, partial(self._decode_next, inst))
                return
            factor = self.faults.step_factor(inst)
        seqs, mean_kv = batch.shape()
        dur = self.costs.decode_step_s(seqs, mean_kv) * factor
        stretch = self._stretch(batch, dur) if factor == 1.0 else None  # degraded: step by step
        if stretch is not None:
            call_later(env, stretch.delay_s, partial(self._stretch_done, inst, stretch))
        else:
            call_later(env, dur, partial(self._step_done, inst, env.now, dur))

    def _decode_inline(self, inst: int, due: tuple[float, float] | None = None, _event: object = None) -> None:
        """``_decode_next`` in a whole run that nothing watches: a step that would end before every queued event
        is the clock's next event, so it is taken here, the clock set to its end as SimPy would set it, rather
        than queued and popped; the loop goes on until a step or stretch ends after the next queued event. The
        step's record and finishes are those of ``_end_step``, written out for the hot loop. While a finish only
        logs and counts (no request waits for decode, no client is told), the steps' finishes are logged and
        counted once, when the loop ends (nothing reads them before). ``due``: (start, price) of a step that ends
        now, queued as an event by this loop (the run stays inline to its end): taken first, with the sequences
        active now, as ``_step_done`` takes it."""
        batch, env, queue, rng = self.decodes[inst], self.env, self.env._queue, self.mtp_rng
        costs, busiest, steps = self.costs, batch._busiest, self.rec.decode_steps
        price, kv_bucket = costs.decode_time_s, KV_BUCKET_TOKENS
        blocks = batch.pools.capacity * batch.num_dies  # the instance's KV blocks (``occupancy``'s divisor)
        assert costs.aggregated_chips is None  # disaggregated decode: priced without a prompt chunk
        quiet = not (self.waiting_kv or self.progress or self.issues_on_finish)  # (none of them changes meanwhile)
        floor = plan_floor(batch.mtp)  # (``plan``'s first test, without the call)
        ended: list[int] = []  # the finishes logged at the end: request ids, and per step its time and count
        times: list[float] = []
        counts: list[int] = []
        while True:
            active = batch.num_active
            if due is not None:  # the step queued as an event: the clock stands at its end
                start, dur = due
                due, end = None, env._now
            else:
                if active == 0:
                    self.decode_loops[inst].asleep = True
                    break
                bucket = round(batch.kv_total / active / kv_bucket)  # ``decode_step_s(*shape())``, written out
                dur = price(busiest.high, bucket if bucket > 1 else 1, 0)
                low = batch._low
                if low is None or low > floor:
                    stretch = plan(batch, self.costs, rng, env._now, env.peek(), dur)
                    if stretch is not None:
                        call_later(env, stretch.delay_s, partial(self._stretch_done, inst, stretch))
                        break
                start = env._now
                end = start + dur  # as a timeout sums it
                if queue and end >= queue[0][0]:  # something else comes first: the step waits its turn
                    call_later(env, dur, partial(self._decode_inline, inst, (start, dur)))  # (``_step_done``)
                    break
                env._now = end  # nothing is queued before it: the clock's next event, taken without the queue
            finished = batch.step_ids(rng)  # ``_step``, written out
            steps.append((inst, start, dur, active, batch.last_tokens, batch.used_blocks / blocks))
            if finished:
                if quiet:
                    ended += finished
                    times.append(end)
                    counts.append(len(finished))
                else:
                    self._finish(finished)
        if counts:  # ``_finish`` of each step in turn, in one go
            self.table.finish_later_steps(ended, times, counts)
            self.finished += len(ended)
            if self.finished >= self.table.n and not self.all_done.triggered:
                self.all_done.succeed()

    def _inline(self) -> bool:
        """Steps may be taken without the queue: a whole run that nothing watches or steps event by event."""
        return self.whole_run and not (self.step_by_step or self.observer or self.listener or self.faults)

    def _stretch_done(self, inst: int, stretch: Stretch, _event: object) -> None:
        batch = self.decodes[inst]
        self._settle(commit(stretch, batch, self.mtp_rng, self.rec, inst, stretch.idx.size))
        self._decode_next(inst)

    def _step_done(self, inst: int, start: float, dur: float, _event: object) -> None:
        if self._inline():
            self._decode_inline(inst, (start, dur))
            return
        self._end_step(inst, start, dur)
        self._decode_next(inst)

    def _end_step(self, inst: int, start: float, dur: float) -> None:
        """A decode step that just ended, and what its end does before the next step is priced."""
        self._settle(self._step(inst, start, dur))

    def _settle(self, finished: list[int] | np.ndarray) -> None:
        """The end of a step or stretch: its finished requests leave, and the observer is told."""
        if len(finished):
            self._finish(finished)
        if self.observer:
            self.observer(self)

    def _stretch(self, batch: DecodeBatch, first_s: float) -> Stretch | None:
        """Steps to take in one computation, unless the run is step by step (the reference path) or online."""
        if self.step_by_step or self.listener or batch.min_left() <= plan_floor(batch.mtp):  # (``plan``'s first test)
            return None
        return plan(batch, self.costs, self.mtp_rng, self.env.now, self.env.peek(), first_s)

    def _step(self, inst: int, start: float, dur: float) -> list[int] | np.ndarray:
        """One decode step that just ended; returns the request ids it finished."""
        batch = self.decodes[inst]
        active = batch.num_active
        finished: list[int] | np.ndarray
        if self.listener:
            stepped, gained, finished = batch.step(self.mtp_rng)
            for rid, n in zip(stepped.tolist(), gained.tolist(), strict=True):
                self.listener.on_tokens(rid, n, self.env.now)
        else:
            finished = batch.step_ids(self.mtp_rng)
        self.rec.decode_step(inst, start, dur, active, batch.last_tokens, batch.occupancy())
        return finished
