"""Per-die counts kept for the two questions a decode batch asks of them at every admission and step: which
die is the least occupied (lowest number first), and how many sequences the busiest die runs. Answered without
scanning every die, which at 320 dies and a million requests was
most of a simulation's time."""

from __future__ import annotations


class LeastFirst:
    """Counts per die with the lowest-numbered least-counted die at hand: the dies at each count as the bits of
    one integer (die ``d``: bit ``d``), so the lowest-numbered die at a count is its lowest set bit, and a die
    moves between counts with two bit operations."""

    def __init__(self, num_dies: int) -> None:
        self.count = [0] * num_dies
        self.bits: dict[int, int] = {0: (1 << num_dies) - 1}  # count -> the dies at it, as bits
        self.low = 0  # no die has a smaller count (some may have none at it: ``first`` moves it up)

    def add(self, die: int, delta: int) -> None:
        bits, bit = self.bits, 1 << die
        level = self.count[die]
        bits[level] ^= bit
        level += delta
        self.count[die] = level
        bits[level] = bits.get(level, 0) | bit
        if level < self.low:
            self.low = level

    def first(self) -> int:
        """The lowest-numbered die among those with the smallest count."""
        bits, low = self.bits, self.low
        dies = bits.get(low, 0)
        while not dies:
            low += 1
            dies = bits.get(low, 0)
        self.low = low
        return (dies & -dies).bit_length() - 1

    def bump_first(self, die: int) -> None:
        """``add(die, 1)`` for ``die`` = ``first()`` (an admission onto the least-occupied die)."""
        self.add(die, 1)

    def drop(self, dies: list[int]) -> None:
        """``add(die, -1)`` for each of ``dies`` in turn (a step's finished sequences), in one call."""
        count, bits, low = self.count, self.bits, self.low
        for die in dies:
            bit = 1 << die
            level = count[die]
            bits[level] ^= bit
            level -= 1
            count[die] = level
            bits[level] = bits.get(level, 0) | bit
            if level < low:
                low = level
        self.low = low


class Highest:
    """Counts per die with the largest count at hand (a histogram of counts)."""

    def __init__(self, num_dies: int, cap: int) -> None:
        self.count = [0] * num_dies
        self.dies_at = [num_dies] + [0] * cap  # dies at each count
        self.high = 0

    def add(self, die: int, delta: int) -> None:
        level = self.count[die]
        self.dies_at[level] -= 1
        level += delta
        self.count[die] = level
        self.dies_at[level] += 1
        if level > self.high:
            self.high = level
        while self.high and not self.dies_at[self.high]:
            self.high -= 1

    def shift(self, dies: list[int], delta: int) -> None:
        """``add(die, delta)`` for each of ``dies`` in turn, in one call (the busiest count is the same after)."""
        count, dies_at, high = self.count, self.dies_at, self.high
        for die in dies:
            level = count[die]
            dies_at[level] -= 1
            level += delta
            count[die] = level
            dies_at[level] += 1
            if level > high:
                high = level
        while high and not dies_at[high]:
            high -= 1
        self.high = high
