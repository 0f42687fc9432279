"""A decode instance's batch: DP attention with one batch per die (slots), sequences admitted only when a
slot and their KV blocks are free, MTP acceptance drawn per sequence. Vectorised over all slots."""

from __future__ import annotations

import numpy as np

from cloudmatrix.serving.kv_pool import KvBlockPools

_FULL = np.iinfo(np.int64).max


class DecodeBatch:
    def __init__(self, num_dies: int, seqs_per_die: int, pools: KvBlockPools, mtp: int, acceptance: float) -> None:
        self.num_dies, self.cap = num_dies, seqs_per_die
        self.pools, self.mtp, self.acceptance = pools, mtp, acceptance
        shape = (num_dies, seqs_per_die)
        self.rid = np.full(shape, -1, dtype=np.int64)  # -1: free slot
        self.active = np.zeros(shape, dtype=bool)  # reserved slots become active when their KV arrives
        self.remaining = np.zeros(shape, dtype=np.int64)
        self.kv = np.zeros(shape, dtype=np.int64)
        self.blocks = np.zeros(shape, dtype=np.int64)
        self.occupied = np.zeros(num_dies, dtype=np.int64)

    def choose_die(self, blocks: int) -> int | None:
        """The least-occupied die with a free slot and room for ``blocks``; None when none fits."""
        load = np.where(
            (self.occupied < self.cap) & (self.pools.used <= self.pools.capacity - blocks), self.occupied, _FULL
        )
        die = int(load.argmin())
        return None if load[die] == _FULL else die

    def reserve(self, rid: int, die: int, blocks: int) -> tuple[int, int]:
        slot = int(np.argmax(self.rid[die] < 0))
        self.pools.allocate(die, blocks)
        self.rid[die, slot], self.blocks[die, slot] = rid, blocks
        self.occupied[die] += 1
        return die, slot

    def activate(self, die: int, slot: int, context: int, remaining: int) -> None:
        self.active[die, slot] = True
        self.kv[die, slot], self.remaining[die, slot] = context, remaining

    @property
    def num_active(self) -> int:
        return int(self.active.sum())

    def shape(self) -> tuple[int, float]:
        """(sequences on the busiest die, mean context over active sequences): the slowest die sets the step."""
        per_die = self.active.sum(axis=1)
        return int(per_die.max()), float(self.kv[self.active].mean())

    def step(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One decode step: each active sequence gains 1 + its accepted draft tokens (consecutive Bernoulli
        successes). Returns the finished request ids and the tokens generated."""
        idx = np.nonzero(self.active)
        n = len(idx[0])
        gained = np.ones(n, dtype=np.int64)
        if self.mtp:
            ok = rng.random((n, self.mtp)) < self.acceptance
            gained += np.cumprod(ok, axis=1).sum(axis=1)
        gained = np.minimum(gained, self.remaining[idx])
        self.remaining[idx] -= gained
        self.kv[idx] += gained
        done = self.remaining[idx] == 0
        dies, slots = idx[0][done], idx[1][done]
        finished = self.rid[dies, slots].copy()
        self.pools.release(dies, self.blocks[dies, slots])
        np.subtract.at(self.occupied, dies, 1)
        self.rid[dies, slots], self.active[dies, slots], self.blocks[dies, slots] = -1, False, 0
        return finished, int(gained.sum())
