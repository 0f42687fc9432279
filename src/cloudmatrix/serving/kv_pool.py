"""KV-cache block pools, one per die. A sequence reserves the blocks for its whole length at admission,
so a running sequence can never overflow the pool; sequences that do not fit wait in the queue. The counts
are a plain list: admissions touch one die at a time, and a numpy scalar costs more than the arithmetic."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class KvBlockPools:
    def __init__(self, num_dies: int, capacity_blocks: int, block_tokens: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("a die must hold at least one KV block")
        self.block_tokens = block_tokens
        self.capacity = capacity_blocks
        self.in_use = [0] * num_dies

    @property
    def used(self) -> np.ndarray:
        """Blocks held per die."""
        return np.array(self.in_use, dtype=np.int64)

    def blocks_for(self, tokens: int) -> int:
        return -(-int(tokens) // self.block_tokens)

    def free(self) -> np.ndarray:
        return self.capacity - self.used

    def fits(self, die: int, blocks: int) -> bool:
        return self.in_use[die] + blocks <= self.capacity

    def allocate(self, die: int, blocks: int) -> None:
        if self.in_use[die] + blocks > self.capacity:
            raise RuntimeError(f"die {die}: {blocks} blocks do not fit ({self.in_use[die]}/{self.capacity} used)")
        self.in_use[die] += blocks

    def release(self, dies: Iterable[int], blocks: Iterable[int]) -> None:
        in_use = self.in_use
        for die, n in zip(dies, blocks, strict=True):
            in_use[die] -= n
            if in_use[die] < 0:
                raise RuntimeError("KV blocks released twice")
