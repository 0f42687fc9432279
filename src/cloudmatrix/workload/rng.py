"""Named, seeded random streams: each consumer draws from its own stream, so adding a draw in one place
never shifts the numbers another place sees."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


class Lookahead:
    """Uniform draws from a Generator with lookahead: ``peek`` shows the next numbers without using them up,
    ``consume`` uses them. ``random`` gives exactly what the Generator's own ``random`` would (a float64 draw
    takes one output of the bit generator, so drawing in blocks never changes the sequence)."""

    BLOCK = 1 << 16  # numbers drawn at a time

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.buffer = np.zeros(0)
        self.pos = 0
        self._room = self.buffer  # the memory every refill reuses (grown when one needs more): no fresh pages

    def peek(self, count: int) -> np.ndarray:
        kept = self.buffer.size - self.pos
        if count > kept:  # the numbers not used yet, then fresh ones drawn in place (no second copy)
            size = kept + max(count - kept, self.BLOCK)
            if self._room.size < size:
                self._room = np.empty(size)
            buffer = self._room[:size]  # a new view at every refill: whoever keyed on ``buffer`` sees the change
            buffer[:kept] = self.buffer[self.pos :]  # (where the two overlap, numpy copies through a temporary)
            self.rng.random(out=buffer[kept:])
            self.buffer, self.pos = buffer, 0
        return self.buffer[self.pos : self.pos + count]

    def consume(self, count: int) -> None:
        if count > self.buffer.size - self.pos:
            raise ValueError("consumed draws that were never peeked")
        self.pos += count

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` numbers, used up (``peek`` then ``consume`` in one call)."""
        if count > self.buffer.size - self.pos:
            self.peek(count)
        pos = self.pos
        self.pos = pos + count
        return self.buffer[pos : pos + count]

    def random(self, size: tuple[int, int]) -> np.ndarray:
        return self.take(size[0] * size[1]).reshape(size)
