"""A decode instance's batch: DP attention with one batch per die (slots), sequences admitted only when a
slot and their KV blocks are free, MTP acceptance drawn per sequence.

A step touches every active sequence, so their request ids and remaining tokens are numpy arrays kept in
slot order (the order steps draw in); a step is a few vector operations on them (each contiguous: a view
with a stride, or a 2-D array's columns picked by a mask, costs more than three 1-D operations here).
Admissions and finishes touch a few slots at a time, so per-slot facts are plain lists, a die's free slots
are a heap of their places on the die (small numbers: Python shares one object for each, so the heap reads
no scattered memory), and the per-die counts live in serving.die_levels, which answers "least occupied die"
and "busiest die" without scanning every die; a group admitted, landed or finished together is handled in
one call."""

from __future__ import annotations

from heapq import heappush
from typing import Protocol

import numpy as np

from cloudmatrix.serving.decode_admission import DieAdmission
from cloudmatrix.serving.die_levels import Highest, LeastFirst
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.serving.mtp_gains import GainTable, gains_of
from cloudmatrix.workload.rng import Lookahead

_NONE = np.zeros(0, dtype=np.int64)
NEAR = 2  # tokens left at which a step reads a sequence one by one (a stretch needs more: sim/decode_runner.py)
# the bounds a step compares with, as 0-d arrays: numpy 2 converts a Python int anew at every comparison
_NEAR, _ZERO = np.array(NEAR, dtype=np.int64), np.array(0, dtype=np.int64)


class Uniforms(Protocol):
    """Where MTP acceptance draws come from: a numpy Generator, or a stream with lookahead over one."""

    def random(self, size: tuple[int, int]) -> np.ndarray: ...


class DecodeBatch(DieAdmission):
    """Slots are numbered die-major (slot ``die * cap + k``); a die fills its lowest free slot first."""

    def __init__(self, num_dies: int, seqs_per_die: int, pools: KvBlockPools, mtp: int, acceptance: float) -> None:
        self.num_dies, self.cap = num_dies, seqs_per_die
        self.pools, self.mtp, self.acceptance = pools, mtp, acceptance
        n = num_dies * seqs_per_die
        self._rid = [-1] * n  # per slot; -1: free
        self._blocks = [0] * n  # KV blocks the slot's sequence reserved
        self._length = [0] * n  # context + remaining tokens: constant while the sequence runs; 0: not active
        self.num_active = 0
        self.free_slots = n
        self.kv_total = 0  # context tokens of the active sequences (exact, so the mean is the mean of ``kv``)
        self.used_blocks = 0  # KV blocks held on all dies (the pools' sum, kept as it changes)
        self.last_tokens = 0  # tokens the last step (or stretch) generated
        # the active sequences in slot order: their slots and the tokens each has left (request ids: ``_rid``)
        self._slots, self._left = _NONE, _NONE
        self._joined: list[int] = []  # slots activated since the last sort
        self._joined_left: list[int] = []  # and the tokens each of them has left
        self._low: int | None = 0  # the fewest tokens an active sequence has left (None: not known)
        self._free = [list(range(seqs_per_die)) for _ in range(num_dies)]  # per die, a heap: k for slot die * cap + k
        self._least = LeastFirst(num_dies)  # occupied slots per die
        self._busiest = Highest(num_dies, seqs_per_die)  # active sequences per die
        self.fenced = np.zeros(num_dies, dtype=bool)  # dies a fault took out of service: no admissions
        self.never_fenced = False  # set by a simulation without faults: admission need not read ``fenced``
        self._gain_table = GainTable(mtp, acceptance)  # used only with MTP on
        busiest, least = self._busiest, self._least
        self._retire_reads = (  # what ``_retire`` reads, gathered once (none of it is ever replaced)
            self._length,
            self._blocks,
            pools.in_use,
            self._free,
            self._rid,
            busiest,
            least,
            busiest.count,
            busiest.dies_at,
            least.count,
            least.bits,
        )

    # ---- views (tests, the emulator, the invariants) ----------------------------------------------------
    @property
    def rid(self) -> np.ndarray:
        return np.array(self._rid, dtype=np.int64)

    @property
    def active(self) -> np.ndarray:
        return np.array(self._length, dtype=np.int64) > 0  # (a reserved slot's KV has not arrived)

    @property
    def blocks(self) -> np.ndarray:
        return np.array(self._blocks, dtype=np.int64)

    @property
    def remaining(self) -> np.ndarray:
        """Tokens each slot's sequence has left (0 for a free or reserved slot)."""
        out = np.zeros(len(self._rid), dtype=np.int64)
        idx = self.active_slots()
        out[idx] = self._left
        return out

    @property
    def kv(self) -> np.ndarray:
        """Context tokens of each active slot's sequence."""
        return np.array(self._length, dtype=np.int64) - self.remaining

    @property
    def occupied(self) -> np.ndarray:
        """Slots reserved or active, per die."""
        return np.array(self._least.count, dtype=np.int64)

    @property
    def active_per_die(self) -> np.ndarray:
        return np.array(self._busiest.count, dtype=np.int64)

    # ---- joining, leaving --------------------------------------------------------------------------------
    def activate(self, slot: int, context: int, remaining: int) -> None:
        self._length[slot] = context + remaining
        self._busiest.add(slot // self.cap, 1)
        self.num_active += 1
        self.kv_total += context
        self._joined.append(slot)
        self._joined_left.append(remaining)
        self._low = None

    def activate_all(self, slots: list[int], contexts: list[int], remaining: list[int]) -> None:
        """``activate`` for reserved slots whose KV landed together, in one call."""
        length, cap, busiest = self._length, self.cap, self._busiest
        running, dies_at, high = busiest.count, busiest.dies_at, busiest.high
        for slot, context, left in zip(slots, contexts, remaining, strict=True):
            length[slot] = context + left
            die = slot // cap  # ``busiest.shift``, written out: one active sequence more on the die
            level = running[die]
            dies_at[level] -= 1
            running[die] = level = level + 1
            dies_at[level] += 1
            if level > high:
                high = level
        busiest.high = high
        self.num_active += len(slots)
        self.kv_total += sum(contexts)
        self._joined += slots
        self._joined_left += remaining
        self._low = None

    def release(self, slot: int) -> None:
        """Free a slot, reserved or active (a request that needs no decode step, or a cancelled one)."""
        die = slot // self.cap
        if self._length[slot]:  # active
            keep = self.active_slots() != slot
            self.kv_total -= self._length[slot] - int(self._left[~keep].sum())
            self._slots, self._left = self._slots[keep], self._left[keep]
            self._low = None
            self._busiest.add(die, -1)
            self.num_active -= 1
        self._free_slot(slot, die)
        self.free_slots += 1

    def evict(self, dies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Release the active sequences on ``dies`` (a fault lost their KV); their (request ids, tokens each had
        left), in slot order. Reserved slots stay: their KV is still in flight."""
        slots = self.active_slots()
        lost = np.isin(slots // self.cap, dies)
        rids, left = self.decoding()[0][lost], self._left[lost].copy()
        for slot in slots[lost].tolist():
            self.release(slot)
        return rids, left

    def _free_slot(self, slot: int, die: int) -> None:
        blocks = self._blocks[slot]
        self.pools.release((die,), (blocks,))
        self.used_blocks -= blocks
        self._least.add(die, -1)
        heappush(self._free[die], slot - die * self.cap)
        self._rid[slot], self._blocks[slot], self._length[slot] = -1, 0, 0

    def slot_of(self, rid: int) -> int | None:
        return self._rid.index(rid) if rid in self._rid else None

    # ---- steps --------------------------------------------------------------------------------------------
    def shape(self) -> tuple[int, float]:
        """(sequences on the busiest die, mean context over active sequences): the slowest die sets the step."""
        return self._busiest.high, self.kv_total / self.num_active

    def occupancy(self) -> float:
        """The share of the instance's KV blocks held (reserved or in use)."""
        return self.used_blocks / (self.pools.capacity * self.num_dies)

    def active_slots(self) -> np.ndarray:
        """The active slots in slot order (the order every step visits them and draws for them)."""
        if self._joined:
            slots = np.concatenate((self._slots, self._joined))  # (the lists as they are: one call fewer each)
            order = slots.argsort(kind="stable")
            self._slots = slots[order]
            self._left = np.concatenate((self._left, self._joined_left))[order]
            self._joined.clear()
            self._joined_left.clear()
        return self._slots

    def left(self) -> np.ndarray:
        """Tokens each active sequence has left, in the order of ``active_slots``."""
        self.active_slots()
        return self._left

    def min_left(self) -> int:
        """The fewest tokens an active sequence has left (kept by the steps; 0 with none active)."""
        if self._low is None:
            left = self.left()
            self._low = left.item(left.argmin()) if left.size else 0  # (argmin: faster than ``min`` on int64)
        return self._low

    def decoding(self) -> tuple[np.ndarray, np.ndarray]:
        """(request ids, tokens each has left) of the active sequences."""
        rid_of = self._rid
        return np.array([rid_of[slot] for slot in self.active_slots().tolist()], dtype=np.int64), self._left

    def gains(self, uniforms: np.ndarray | None, idx: np.ndarray, steps: int) -> np.ndarray:
        """Tokens each sequence in ``idx`` would gain in each of ``steps`` steps, before clipping to what it has
        left: 1 + its accepted draft tokens (consecutive Bernoulli successes). ``uniforms`` are laid out as the
        steps draw them, one after another: (step, sequence, draft)."""
        gained = np.ones((steps, idx.size), dtype=np.int64)
        if self.mtp:
            assert uniforms is not None
            ok = uniforms.reshape(steps, idx.size, self.mtp) < self.acceptance
            gained += ok[:, :, 0] if self.mtp == 1 else np.cumprod(ok, axis=2).sum(axis=2)
        return gained

    def peek_gains(self, uniforms: Lookahead, steps: int) -> np.ndarray:
        """``gains`` of the active sequences over the next ``steps`` steps with MTP on, read off the stream's
        table without using the draws up: (steps, sequences)."""
        n = self.active_slots().size
        return self._gain_table.peek(uniforms, steps * n).reshape(steps, n)

    def run_step(self, rng: Uniforms) -> np.ndarray:
        """One decode step: each active sequence gains 1 + its accepted draft tokens (clipped to what it has
        left). Returns the finished request ids; ``last_tokens`` holds the tokens generated."""
        return np.array(self.step_ids(rng), dtype=np.int64)

    def step_ids(self, rng: Uniforms) -> list[int]:
        """``run_step`` with the finished request ids as a list. After the step only the sequences with
        ``NEAR`` tokens left or fewer are read one by one (every finish is among them, and their fewest left
        is the batch's while any is still running): one comparison finds them, rather than a minimum and then
        a comparison."""
        idx = self.active_slots() if self._joined else self._slots
        left, n, mtp = self._left, idx.size, self.mtp
        if not n:  # a fault cut every sequence while the step ran
            self.last_tokens = 0
            self._low = 0
            return []
        if not mtp:
            left -= 1
            tokens = n
        elif isinstance(rng, Lookahead):  # the gains read off the stream's table (serving/mtp_gains.py)
            table, pos = self._gain_table, rng.pos
            at = pos // mtp - table.first
            if at >= 0 and at + n <= table.size and rng.buffer is table.buffer and not pos % mtp:
                rng.pos = pos + n * mtp  # within the converted span: ``GainTable.take``, written out
                sums = table.sums
                gained, tokens = table.gains[at : at + n], sums.item(at + n) - sums.item(at)
            else:
                gained, tokens = table.take(rng, n)
            left -= gained
        else:
            gained = gains_of(rng.random((n * mtp, 1))[:, 0], mtp, self.acceptance)
            left -= gained
            tokens = int(gained.sum())
        near = (left <= _NEAR).nonzero()[0].tolist()  # a few: read one by one (a numpy call costs more here)
        ended: list[int] = []
        low = 0  # the fewest left among the near ones still running (0: none)
        for k in near:
            v = left.item(k)
            if v > 0:
                if not low or v < low:
                    low = v
            else:
                ended.append(k)
                tokens += v  # a sequence that accepted more draft tokens than it had left gains only those
        self._low = low or None  # none near runs on: more than NEAR each, asked of ``min_left`` when needed
        self.last_tokens = tokens
        self.kv_total += tokens
        if not ended:
            return []
        keep = left > _ZERO
        self._slots, self._left = idx[keep], left[keep]
        return self._retire(list(map(idx.item, ended)))

    def step(self, rng: Uniforms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``run_step`` that also returns (request ids of the active sequences, tokens each gained, finished
        request ids): for a listener that streams every sequence's tokens."""
        stepped, left = self.decoding()
        before = left.copy()
        finished = self.run_step(rng)  # it updates ``left`` in place, then drops the finished from the batch
        return stepped, before - np.maximum(left, 0), finished

    def advance(self, idx: np.ndarray, gained: np.ndarray) -> np.ndarray:
        """Add ``gained`` tokens to the active sequences (``idx``: ``active_slots()``; a stretch of steps in
        which none finished before the last), clipped to what each has left; free the finished ones.
        Returns the finished request ids."""
        if idx is not self._slots or self._joined:
            raise RuntimeError("a stretch applied to a batch that changed since it was planned")
        left = self._left
        gained = np.minimum(gained, left)
        left -= gained
        self.last_tokens = int(gained.sum())
        self.kv_total += self.last_tokens
        if left.all():
            self._low = None
            return _NONE
        running = left != 0
        slots = idx[~running].tolist()
        self._slots, self._left = idx[running], left[running]
        self._low = None
        return np.array(self._retire(slots), dtype=np.int64)

    def _retire(self, slots: list[int]) -> list[int]:
        """Free ``slots``, whose sequences have just generated their last token and left the active arrays;
        their request ids. A few a step, each in plain Python (vector calls cost more here), with the per-die
        counts' ``Highest.shift`` and ``LeastFirst.drop`` written out in the same loop."""
        lengths, blocks_of, in_use, free, rid_of, busiest, least, running, dies_at, occupied, bits = self._retire_reads
        cap, low = self.cap, least.low
        finished = []
        freed_kv = freed_blocks = 0
        for slot in slots:
            die = slot // cap
            finished.append(rid_of[slot])
            freed_kv += lengths[slot]  # nothing remains: the context is the whole length
            blocks = blocks_of[slot]
            in_use[die] -= blocks
            freed_blocks += blocks
            heappush(free[die], slot - die * cap)
            rid_of[slot], blocks_of[slot], lengths[slot] = -1, 0, 0
            level = running[die]  # one active sequence fewer on the die
            dies_at[level] -= 1
            running[die] = level = level - 1
            dies_at[level] += 1
            level, bit = occupied[die], 1 << die  # one occupied slot fewer on the die
            bits[level] ^= bit
            occupied[die] = level = level - 1
            bits[level] = bits.get(level, 0) | bit
            if level < low:
                low = level
        high = busiest.high
        while high and not dies_at[high]:
            high -= 1
        busiest.high, least.low = high, low
        self.kv_total -= freed_kv
        self.used_blocks -= freed_blocks
        self.num_active -= len(slots)
        self.free_slots += len(slots)
        return finished
