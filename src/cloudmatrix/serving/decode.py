"""A decode instance's batch: DP attention with one batch per die (slots), sequences admitted only when a
slot and their KV blocks are free, MTP acceptance drawn per sequence. Vectorised over all slots."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from cloudmatrix.serving.kv_pool import KvBlockPools

_FULL = np.iinfo(np.int64).max


class Uniforms(Protocol):
    """Where MTP acceptance draws come from: a numpy Generator, or a stream with lookahead over one."""

    def random(self, size: tuple[int, int]) -> np.ndarray: ...


class DecodeBatch:
    """Slots are stored flat (die-major: slot ``die * cap + k``) so one step is a handful of vector ops."""

    def __init__(self, num_dies: int, seqs_per_die: int, pools: KvBlockPools, mtp: int, acceptance: float) -> None:
        self.num_dies, self.cap = num_dies, seqs_per_die
        self.pools, self.mtp, self.acceptance = pools, mtp, acceptance
        n = num_dies * seqs_per_die
        self.rid = np.full(n, -1, dtype=np.int64)  # -1: free slot
        self.active = np.zeros(n, dtype=bool)  # reserved slots become active when their KV arrives
        self.remaining = np.zeros(n, dtype=np.int64)
        self.kv = np.zeros(n, dtype=np.int64)
        self.blocks = np.zeros(n, dtype=np.int64)
        self.occupied = np.zeros(num_dies, dtype=np.int64)
        self.active_per_die = np.zeros(num_dies, dtype=np.int64)
        self.num_active = 0
        self.free_slots = n
        self.kv_total = 0  # context tokens of the active sequences (exact, so the mean is the mean of ``kv``)
        self._slots = np.zeros(0, dtype=np.int64)  # the active slots in slot order, kept as they change
        self._joined: list[int] = []  # slots activated since ``_slots`` was last sorted
        self.fenced = np.zeros(num_dies, dtype=bool)  # dies a fault took out of service: no admissions

    def choose_die(self, blocks: int) -> int | None:
        """The least-occupied die with a free slot and room for ``blocks``; None when none fits."""
        if not self.free_slots:
            return None
        load = np.where(
            (self.occupied < self.cap) & (self.pools.used <= self.pools.capacity - blocks) & ~self.fenced,
            self.occupied,
            _FULL,
        )
        die = int(load.argmin())
        return None if load[die] == _FULL else die

    def reserve(self, rid: int, die: int, blocks: int) -> int:
        """Reserve a slot and the KV blocks on ``die``; returns the slot."""
        base = die * self.cap
        slot = base + int(np.argmax(self.rid[base : base + self.cap] < 0))
        self.pools.allocate(die, blocks)
        self.rid[slot], self.blocks[slot] = rid, blocks
        self.occupied[die] += 1
        self.free_slots -= 1
        return slot

    def activate(self, slot: int, context: int, remaining: int) -> None:
        self.active[slot] = True
        self.kv[slot], self.remaining[slot] = context, remaining
        self.active_per_die[slot // self.cap] += 1
        self.num_active += 1
        self.kv_total += context
        self._joined.append(slot)

    def release(self, slot: int) -> None:
        """Free a slot, reserved or active (a request that needs no decode step, or a cancelled one)."""
        die = slot // self.cap
        if self.active[slot]:
            self.active[slot] = False
            self.active_per_die[die] -= 1
            self.num_active -= 1
            self.kv_total -= int(self.kv[slot])
            if slot in self._joined:
                self._joined.remove(slot)
            else:
                self._slots = self._slots[self._slots != slot]
        self.pools.release(np.array([die]), self.blocks[slot : slot + 1])
        self.occupied[die] -= 1
        self.free_slots += 1
        self.rid[slot], self.blocks[slot] = -1, 0

    def slot_of(self, rid: int) -> int | None:
        found = np.flatnonzero(self.rid == rid)
        return int(found[0]) if found.size else None

    def shape(self) -> tuple[int, float]:
        """(sequences on the busiest die, mean context over active sequences): the slowest die sets the step."""
        return int(self.active_per_die.max()), self.kv_total / self.num_active

    def active_slots(self) -> np.ndarray:
        """The active slots in slot order (the order every step visits them and draws for them)."""
        if self._joined:
            self._slots = np.sort(np.concatenate([self._slots, np.array(self._joined, dtype=np.int64)]))
            self._joined.clear()
        return self._slots

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

    def step(self, rng: Uniforms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decode step: each active sequence gains 1 + its accepted draft tokens. Returns (request ids of
        the active sequences, tokens each gained, finished request ids)."""
        idx = self.active_slots()
        uniforms = rng.random((idx.size, self.mtp)) if self.mtp else None
        return self.advance(idx, self.gains(uniforms, idx, 1)[0])

    def advance(self, idx: np.ndarray, gained: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add ``gained`` tokens to the sequences in slots ``idx`` (one step's, or the sum of a stretch of steps
        in which none finished before the last), clipped to what each has left; free the finished ones.
        Returns (request ids of ``idx``, tokens each gained, finished request ids)."""
        remaining = self.remaining[idx]
        gained = np.minimum(gained, remaining)
        self.remaining[idx] = remaining - gained
        self.kv[idx] += gained
        self.kv_total += int(gained.sum())
        ending = remaining == gained
        done = idx[ending]
        stepped = self.rid[idx]
        finished = self.rid[done].copy()
        if done.size:
            dies = done // self.cap
            self.pools.release(dies, self.blocks[done])
            per_die = np.bincount(dies, minlength=self.num_dies)
            self.occupied -= per_die
            self.active_per_die -= per_die
            self.num_active -= done.size
            self.free_slots += done.size
            self.rid[done], self.active[done], self.blocks[done] = -1, False, 0
            self.kv_total -= int(self.kv[done].sum())
            if idx is self._slots and not self._joined:
                self._slots = idx[~ending]
            else:  # not the whole active set: sort it out again
                self._slots, self._joined = np.flatnonzero(self.active), []
        return stepped, gained, finished
