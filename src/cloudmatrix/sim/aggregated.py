"""Co-located (aggregated) instances: each step decodes the running batch and prefills queued prompts in
chunks, the engine's scheduler sharing its token budget between the two (serving/step_policy.py: beside the
batch, after its decode tokens, or prefill-only steps that pause it). A prompt reserves its decode slot and
KV blocks before its first chunk, so it never waits for memory after its prefill; its first token comes with
the step that completes the prompt (no KV transfer). An overlapping scheduler (SGLang, TensorRT-LLM: the
stack's ``loop``) formed the next step while the running one ran, so a request that arrives during a step
first joins the step after the next: on average the wait ``catalog.stack_loop.prompt_wait_steps`` prices.
Under TensorRT-LLM's attention-DP balance (the pool's ``attention_dp_balance``) new prompts are also held
until every DP rank has one, or a timeout (serving/adp_balance.py)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import numpy as np
import simpy

from cloudmatrix.catalog.stacks import DEFAULT_SCHEDULING, Scheduling
from cloudmatrix.serving.adp_balance import AttentionDpGate
from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.requests import RequestTable
from cloudmatrix.serving.step_policy import share_step
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.decode_runner import Stretch, commit
from cloudmatrix.sim.decode_side import Faults
from cloudmatrix.sim.events import Sleeper, call_later
from cloudmatrix.sim.metrics import Recorder
from cloudmatrix.sim.scenario import AggregatedPool, AttentionDpBalance
from cloudmatrix.workload.rng import Lookahead


class Simulation(Protocol):
    """What an instance uses of the simulation that owns it (sim/engine.py), named here so the two modules
    do not import each other."""

    env: simpy.Environment
    table: RequestTable
    costs: StepCosts
    rec: Recorder
    mtp_rng: Lookahead
    observer: Callable[[Any], None] | None

    def _finish(self, rids: np.ndarray) -> None: ...

    def _stretch(self, batch: DecodeBatch, first_s: float) -> Stretch | None: ...

    def decode_left(self, rid: int) -> int: ...

    @property
    def faults(self) -> Faults | None: ...


class AggregatedInstance:
    def __init__(
        self,
        sim: Simulation,
        index: int,
        batch: DecodeBatch,
        budget_tokens: int,
        scheduling: Scheduling = DEFAULT_SCHEDULING,
        recv_interval: int = 1,
        overlap: bool = False,
        balance: AttentionDpBalance | None = None,
    ) -> None:
        self.sim, self.index, self.batch, self.budget = sim, index, batch, budget_tokens
        self.scheduling, self.recv_interval, self.overlap = scheduling, recv_interval, overlap
        self.queue: deque[int] = deque()
        # arrived requests the scheduler has not taken in yet (a receive interval above 1), the decode steps
        # since its last intake, and whether it takes them in before the next step (after a prefill step or
        # from idle, as SGLang's receive skipper weighs those)
        self.inbox: deque[int] = deque()
        self.steps_since_intake = 0
        self.intake_now = True
        self.starting = False  # an idle engine woke for one request and starts its step with it alone
        # an overlapping scheduler (``overlap``) formed the step that runs next while the last one ran: what
        # reached it during the running step (``late``) misses the next step too, and is ``held`` for one
        self.late: deque[int] = deque()
        self.held: deque[int] = deque()
        self.prefilling: list[list[int]] = []  # [request id, slot, prompt tokens still to prefill]
        self.loop = Sleeper(sim.env, self._next)
        self.pending_tokens = 0  # prompt tokens queued or still to prefill (kept as they change: O(1) routing)
        # TensorRT-LLM's attention-DP balance over the instance's DP ranks (its die batches); None: off
        self.gate = (
            None
            if balance is None
            else AttentionDpGate(batch.num_dies, balance.timeout_iters, balance.batching_wait_iters)
        )

    @classmethod
    def pool(cls, sim: Simulation, batches: list[DecodeBatch], a: AggregatedPool | None) -> list[AggregatedInstance]:
        """The instances of aggregated pool ``a``, one on each decode batch (none without the pool)."""
        if a is None:
            return []
        budget = a.chips * a.chunk_tokens_per_chip
        return [
            cls(sim, i, b, budget, a.scheduling, a.recv_interval, a.overlap, a.attention_dp_balance)
            for i, b in enumerate(batches)
        ]

    def load(self) -> float:
        """Prompt tokens waiting or in progress, for least-loaded routing."""
        return float(self.pending_tokens)

    def enqueue(self, rid: int) -> None:
        """A request reaches the scheduler. An idle engine starts a step with the first to arrive; those that
        arrive as it starts (clients never send at exactly the same instant) join after that step."""
        if self.loop.asleep:
            self.queue.append(rid)
            self.starting = True
        elif self.overlap:
            self.late.append(rid)
        elif self.starting or self.recv_interval > 1:
            self.inbox.append(rid)
        else:
            self.queue.append(rid)
        self.pending_tokens += int(self.sim.table.input_len[rid])
        self.loop.wake()

    def _intake(self) -> None:
        """Take the arrived requests into the queue where the scheduler polls for them: before every step
        with an interval of 1, else after a prefill step, from idle, or once ``recv_interval`` decode steps
        have run since its last poll (SGLang's --scheduler-recv-interval)."""
        if self.intake_now or self.recv_interval == 1 or self.steps_since_intake >= self.recv_interval:
            if self.inbox:
                self.queue.extend(self.inbox)
                self.inbox.clear()
            self.steps_since_intake, self.intake_now = 0, False

    def _decoded_steps(self, steps: int, prefilled: bool) -> None:
        """Count the steps that just ran toward the next poll for new requests; under an overlapping scheduler
        the requests held a step reach the inbox, and those that came during this step are held."""
        if self.overlap:
            self.inbox.extend(self.held)
            self.held.clear()
            self.held, self.late = self.late, self.held
        if prefilled:
            self.intake_now = True
        elif self.inbox:
            self.steps_since_intake += steps
        else:  # polls with nothing to take in come and go: only the phase of the count matters
            self.steps_since_intake = (self.steps_since_intake + steps) % self.recv_interval

    def _admit(self) -> None:
        """Start prompts whose full-length KV fits (FIFO: the head waits rather than being overtaken)."""
        table, now = self.sim.table, self.sim.env.now
        while self.queue:
            rid = self.queue[0]
            slot = self.batch.admit(rid, int(table.input_len[rid] + table.output_len[rid]))
            if slot is None:
                return
            self.queue.popleft()
            table.start_prefill(rid, now)
            self.prefilling.append([rid, slot, int(table.input_len[rid])])

    def _idle_intake(self) -> None:
        """With nothing to run, nothing is launched ahead and the scheduler polls at once: every request that
        reached it is taken in (in arrival order) and starts what fits."""
        self.inbox.extend(self.held)
        self.inbox.extend(self.late)
        self.held.clear()
        self.late.clear()
        self.intake_now = True
        self._intake()
        self._admit()

    def _plan_chunk(self, left: int) -> tuple[int, list[list[int]]]:
        """Prompt tokens this step takes, at most ``left`` (FIFO through the prompts in progress), and the
        prompts it completes."""
        taken, completing = 0, list[list[int]]()
        if left <= 0:
            return 0, completing
        for entry in self.prefilling:
            take = min(entry[2], left)
            entry[2] -= take
            left -= take
            taken += take
            self.pending_tokens -= take
            if entry[2] == 0:
                completing.append(entry)
            if left == 0:
                break
        return taken, completing

    def _next(self, _event: object = None) -> None:
        """Start what fits, then price the next step (or a decode-only stretch) and apply it at its end;
        sleep when there is nothing to run."""
        sim, batch = self.sim, self.batch
        if self.starting:  # the idle engine's first step runs with the request that woke it
            self.starting, self.intake_now = False, True
        else:
            self._intake()
        if self.gate is None or not self._balance_holds():
            self._admit()
        if not self.prefilling and batch.num_active == 0 and (self.held or self.late or self.inbox):
            self._idle_intake()
        if not self.prefilling and batch.num_active == 0:
            self.loop.asleep = True
            self.intake_now = True  # an idle scheduler polls at once
            return
        factor = 1.0
        if sim.faults:  # a fault holds the instance for its recovery's pause, then slows it while degraded
            hold = sim.faults.hold_s(self.index)
            if hold > 0:
                call_later(sim.env, hold, self._next)
                return
            factor = sim.faults.step_factor(self.index)
        share = share_step(self.scheduling, self.budget, batch.num_active * (1 + batch.mtp), bool(self.prefilling))
        chunk, completing = self._plan_chunk(share.prompt_tokens)
        decodes = share.decodes and batch.num_active > 0
        seqs, mean_kv = batch.shape() if decodes else (0, 1.0)
        dur = sim.costs.decode_step_s(seqs, mean_kv, chunk) * factor
        waiting = self.prefilling or self.inbox or self.late or self.held or (self.gate and self.queue)
        stretch = sim._stretch(batch, dur) if not waiting and factor == 1.0 else None
        if stretch is not None:  # decode only, and nothing queued can start before a sequence finishes
            call_later(sim.env, stretch.delay_s, partial(self._stretch_done, stretch, seqs * batch.num_dies))
        else:
            call_later(sim.env, dur, partial(self._step_done, sim.env.now, dur, seqs, chunk, completing, decodes))

    def _balance_holds(self) -> bool:
        """One iteration of the attention-DP balance (``gate`` set): whether it holds the queued prompts."""
        assert self.gate is not None
        batch = self.batch
        room = bool((batch.occupied < batch.cap).all())
        return self.gate.holds(len(self.queue), bool((batch.active_per_die > 0).all()), room)

    def _stretch_done(self, stretch: Stretch, active: int, _event: object) -> None:
        sim = self.sim
        if self.gate is not None:  # the stretch's first step counted where it was formed
            self.gate.idle_iterations(stretch.steps - 1, bool((self.batch.active_per_die > 0).all()))
        self._decoded_steps(stretch.steps, prefilled=False)
        finished = commit(stretch, self.batch, sim.mtp_rng, sim.rec, self.index, active)
        if finished.size:
            sim._finish(finished)
        self._stepped()

    def _step_done(
        self,
        start: float,
        dur: float,
        seqs: int,
        chunk: int,
        completing: list[list[int]],
        decodes: bool,
        _event: object,
    ) -> None:
        self._decoded_steps(1, prefilled=chunk > 0)
        self._step(start, dur, seqs, chunk, completing, decodes)
        self._stepped()

    def _stepped(self) -> None:
        if self.sim.observer:
            self.sim.observer(self.sim)
        self._next()

    def _step(
        self, start: float, dur: float, seqs: int, chunk: int, completing: list[list[int]], decodes: bool = True
    ) -> None:
        """One step that just ended: its decode tokens (unless the batch paused for a prefill-only step), its
        prompt chunk and the prompts it completed."""
        sim, batch = self.sim, self.batch
        finished = np.zeros(0, dtype=np.int64)
        tokens = 0
        if decodes and batch.num_active:
            finished = batch.run_step(sim.mtp_rng)
            tokens = batch.last_tokens
        sim.rec.decode_step(self.index, start, dur, seqs * batch.num_dies, tokens, batch.occupancy())
        if chunk:
            sim.rec.prefill_batch(self.index, start, dur, chunk)
        done_prompts = self._complete(completing)
        if finished.size or done_prompts.size:
            sim._finish(np.concatenate([finished, done_prompts]))

    def _complete(self, completing: list[list[int]]) -> np.ndarray:
        """Prompts whose last chunk ran: the first token is out; they join the decode batch (or finish)."""
        table, now, one_token = self.sim.table, self.sim.env.now, []
        for entry in completing:
            if entry not in self.prefilling:  # a fault cut it during the step
                continue
            self.prefilling.remove(entry)
            rid, slot = entry[0], entry[1]
            table.end_prefill(rid, now)
            table.admit_decode(rid, now)
            table.start_decode(rid, now)
            remaining = self.sim.decode_left(rid)
            if remaining <= 0:
                self.batch.release(slot)
                one_token.append(rid)
            else:
                self.batch.activate(slot, int(table.input_len[rid]) + 1, remaining)
        return np.array(one_token, dtype=np.int64)
