"""Per-die counts kept for the two questions a decode batch asks of them at every admission and step: which
die is the least occupied (lowest number first), and how many sequences the busiest die runs. Answered in
O(log dies) from buckets rather than by scanning every die, which at 320 dies and a million requests was
most of a simulation's time."""

from __future__ import annotations

from heapq import heappop, heappush


class LeastFirst:
    """Counts per die with the lowest-numbered least-counted die at hand: a heap of dies per count, whose
    stale entries (a die that has since moved to another count) are dropped when they reach the top."""

    def __init__(self, num_dies: int) -> None:
        self.count = [0] * num_dies
        self.buckets: dict[int, list[int]] = {0: list(range(num_dies))}
        self.low = 0

    def add(self, die: int, delta: int) -> None:
        level = self.count[die] + delta
        self.count[die] = level
        self._file(die, level)
        if level < self.low:
            self.low = level

    def _file(self, die: int, level: int) -> None:
        """Put ``die`` in the bucket of ``level`` (its new count)."""
        bucket = self.buckets.get(level)
        if bucket is None:
            self.buckets[level] = [die]
        else:
            heappush(bucket, die)
            if len(bucket) > 4 * len(self.count):  # shed stale entries so memory stays bounded
                self.buckets[level] = sorted({d for d in bucket if self.count[d] == level})

    def first(self) -> int:
        """The lowest-numbered die among those with the smallest count."""
        while True:
            bucket = self.buckets.get(self.low)
            while bucket:
                die = bucket[0]
                if self.count[die] == self.low:
                    return die
                heappop(bucket)
            self.low += 1

    def bump_first(self, die: int) -> None:
        """``add(die, 1)`` for ``die`` = ``first()`` (an admission onto the least-occupied die), in one call."""
        level = self.count[die] + 1
        self.count[die] = level
        heappop(self.buckets[level - 1])  # it tops its old bucket: leave no stale entry behind
        self._file(die, level)

    def drop(self, dies: list[int]) -> None:
        """``add(die, -1)`` for each of ``dies`` in turn (a step's finished sequences), in one call."""
        count, buckets, low, limit = self.count, self.buckets, self.low, 4 * len(self.count)
        for die in dies:
            level = count[die] - 1
            count[die] = level
            bucket = buckets.get(level)
            if bucket is None:
                buckets[level] = [die]
            else:
                heappush(bucket, die)
                if len(bucket) > limit:
                    buckets[level] = sorted({d for d in bucket if count[d] == level})
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
