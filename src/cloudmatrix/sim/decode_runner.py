"""Stretches of decode steps advanced in one computation. Between two events that change a decode batch (a
sequence joining or finishing, a reservation, anything else waiting in the event queue) the batch runs steps
whose time changes only through KV growth. A stretch computes those steps at once, with the same MTP draws
in the same order, the same step prices and the same clock sums as the step-by-step path, so a run gives
bit-identical results either way; it ends at the first finish or before the next queued event."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.metrics import Recorder
from cloudmatrix.workload.rng import Lookahead

MAX_DRAWS = 1 << 18  # sequence-steps one stretch looks ahead at most (bounds its memory to a few MB)
SHORT = 16  # a stretch of at most this many steps is priced step by step in plain Python
MIN_STEPS = 4  # a stretch sure to be shorter costs more to plan and apply than its steps taken one by one


def plan_floor(mtp: int) -> int:
    """The fewest tokens left at or below which no stretch is planned: a step gains ``1 + mtp`` tokens at most,
    so above it every sequence runs ``MIN_STEPS`` steps or more before it can finish."""
    return (MIN_STEPS - 1) * (1 + mtp)


@dataclass(frozen=True, kw_only=True)
class Stretch:
    idx: np.ndarray  # the active slots, in the order the step-by-step path visits them
    gained: np.ndarray  # tokens each of them gains over the stretch (clipped to what it had left)
    starts_s: list[float]  # each step's start
    durations_s: list[float]  # each step's price
    tokens: list[int]  # tokens each step generates
    seqs: int  # sequences on the busiest die (the shape every step is priced at)
    draws: int  # MTP draws the stretch uses
    delay_s: float  # from now to the end of the last step; now + delay_s is that end exactly

    @property
    def steps(self) -> int:
        return len(self.durations_s)


def plan(
    batch: DecodeBatch, costs: StepCosts, uniforms: Lookahead, now: float, horizon: float, first_s: float
) -> Stretch | None:
    """The steps from ``now`` up to and including the first that finishes a sequence, all ending before
    ``horizon`` (the next queued event); None when fewer than two steps qualify, or when a sequence could
    finish within ``MIN_STEPS - 1`` steps (at high concurrency nearly every step: planning the stretch, drawing
    ahead and applying it would cost more than the steps it saves).
    ``first_s`` is the price of the next step, which the caller has already computed."""
    if now + first_s >= horizon:
        return None
    low = batch.min_left()  # every step gains a token, so some sequence ends within ``low`` steps
    if low <= plan_floor(batch.mtp):  # a short stretch at most: not worth its planning (draws, prices)
        return None
    lookahead = MAX_DRAWS // (batch.num_active * batch.mtp) if batch.mtp else MAX_DRAWS
    if horizon < float("inf"):
        lookahead = min(lookahead, int((horizon - now) / first_s) + 1)  # steps do not get cheaper as KV grows
    if lookahead < 2:
        return None
    lookahead = min(lookahead, low)
    if lookahead <= 2:
        return None
    idx = batch.active_slots()
    remaining = batch.left()
    if batch.mtp:
        cum = _cumulative_gains(batch, uniforms, remaining, lookahead)
        if len(cum) < 2:  # the next step finishes a sequence: nothing to skip
            return None
        totals = np.minimum(cum, remaining).sum(axis=1)  # tokens the batch has gained after each step
    else:  # one token a step: nobody has fewer than ``lookahead`` left, so nothing is clipped
        cum = np.arange(1, lookahead + 1)[:, None]
        totals = cum[:, 0] * idx.size
    seqs = batch.shape()[0]
    steps, starts, durations, tokens, end = (_short if len(totals) <= SHORT else _long)(
        costs, seqs, batch.kv_total, idx.size, totals, now, horizon
    )
    while steps >= 2 and now + (end[steps - 1] - now) != end[steps - 1]:
        steps -= 1  # rare: the clock could not land on the stretch's end exactly; end a step earlier
    if steps < 2:
        return None
    return Stretch(
        idx=idx,
        gained=np.minimum(cum[steps - 1], remaining),
        starts_s=starts[:steps],
        durations_s=durations[:steps],
        tokens=tokens[:steps],
        seqs=seqs,
        draws=steps * idx.size * batch.mtp,
        delay_s=end[steps - 1] - now,
    )


Steps = tuple[int, list[float], list[float], list[int], list[float]]  # steps, starts, prices, tokens, ends


def _short(costs: StepCosts, seqs: int, kv_total: int, n: int, totals: np.ndarray, now: float, horizon: float) -> Steps:
    """The steps of a short stretch that end before ``horizon``, one by one in plain Python (a few steps: cheaper
    than the vector calls of ``_long``, and the same numbers: the same divisions, prices and sums in order)."""
    price = costs.decode_step_s
    starts: list[float] = []
    durations: list[float] = []
    tokens: list[int] = []
    ends: list[float] = []
    at, before = now, 0
    for total in totals.tolist():
        dur = price(seqs, (kv_total + before) / n)  # the mean context at the step's start
        end = at + dur
        if end >= horizon:
            break
        starts.append(at)
        durations.append(dur)
        tokens.append(total - before)
        ends.append(end)
        at, before = end, total
    return len(durations), starts, durations, tokens, ends


def _long(costs: StepCosts, seqs: int, kv_total: int, n: int, totals: np.ndarray, now: float, horizon: float) -> Steps:
    """``_short`` as vector operations, for a long stretch."""
    tokens = np.diff(totals, prepend=0)
    # the mean context at each step's start, as the step-by-step path computes it (exact integer sums)
    durations = costs.decode_steps_s(seqs, (kv_total + totals - tokens) / n)
    ends = np.cumsum(np.concatenate([[now], durations]))[1:]  # sequential sums, as the clock adds them
    steps = min(len(totals), int(np.searchsorted(ends, horizon, side="left")))
    starts = [now, *ends[: max(steps - 1, 0)].tolist()]
    return steps, starts, durations[:steps].tolist(), tokens[:steps].tolist(), ends[:steps].tolist()


def _cumulative_gains(batch: DecodeBatch, uniforms: Lookahead, remaining: np.ndarray, limit: int) -> np.ndarray:
    """Tokens each sequence has gained after each step (unclipped, MTP on), up to the first step that
    finishes one and at most ``limit`` steps: (steps, sequences). The draws are looked at in doubling
    windows: at high concurrency some sequence finishes within a step or two."""
    size = min(limit, 2)
    while True:
        cum = batch.peek_gains(uniforms, size).cumsum(axis=0)
        hit = (cum >= remaining).any(axis=1)
        if hit.any():
            return cum[: int(hit.argmax()) + 1]
        if size == limit:
            return cum
        size = min(2 * size, limit)


def commit(
    stretch: Stretch,
    batch: DecodeBatch,
    uniforms: Lookahead,
    rec: Recorder,
    inst: int,
    active: int,
) -> np.ndarray:
    """Apply a stretch once the clock stands at its end: the draws it used, the tokens, the recorded steps
    (``active``: the sequence count each step records). Returns the request ids that finished."""
    uniforms.consume(stretch.draws)
    occupancy = batch.occupancy()  # no block is freed before the last step
    finished = batch.advance(stretch.idx, stretch.gained)
    rec.decode_stretch(
        inst, stretch.starts_s, stretch.durations_s, active, stretch.tokens, occupancy, batch.occupancy()
    )
    return finished
