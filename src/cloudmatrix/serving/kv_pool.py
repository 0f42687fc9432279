"""KV-cache block pools, one per die. A sequence reserves the blocks for its whole length at admission,
so a running sequence can never overflow the pool; sequences that do not fit wait in the queue."""

from __future__ import annotations

import numpy as np


class KvBlockPools:
    def __init__(self, num_dies: int, capacity_blocks: int, block_tokens: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("a die must hold at least one KV block")
        self.block_tokens = block_tokens
        self.capacity = capacity_blocks
        self.used = np.zeros(num_dies, dtype=np.int64)

    def blocks_for(self, tokens: int) -> int:
        return -(-int(tokens) // self.block_tokens)

    def free(self) -> np.ndarray:
        return self.capacity - self.used

    def allocate(self, die: int, blocks: int) -> None:
        if self.used[die] + blocks > self.capacity:
            raise RuntimeError(f"die {die}: {blocks} blocks do not fit ({self.used[die]}/{self.capacity} used)")
        self.used[die] += blocks

    def release(self, dies: np.ndarray, blocks: np.ndarray) -> None:
        np.subtract.at(self.used, dies, blocks)
        if np.any(self.used < 0):
            raise RuntimeError("KV blocks released twice")
