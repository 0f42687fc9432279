"""MTP gains read off the acceptance draws a buffer at a time. A decode step gives each active sequence 1 +
its accepted draft tokens (the leading run of its ``mtp`` draws below the acceptance rate). Rather than
compare a step's few hundred draws anew at every step, the gains of a whole buffer of draws (a
``workload.rng.Lookahead``'s) are computed once with their running sums: a step then takes a slice, and its
token count is a difference of two sums. The numbers are the draws' own, so the steps are unchanged. A span
is converted into the same two arrays each time (grown when a span is longer): fresh half-megabyte arrays at
every span cost page faults and cache misses beyond the arithmetic."""

from __future__ import annotations

import numpy as np

from cloudmatrix.workload.rng import Lookahead


def gains_of(draws: np.ndarray, mtp: int, acceptance: float, out: np.ndarray | None = None) -> np.ndarray:
    """1 + the leading run of accepted drafts, per group of ``mtp`` consecutive draws (mtp >= 1); written into
    ``out`` when given."""
    ok = draws.reshape(-1, mtp) < acceptance
    run = ok[:, 0] if mtp == 1 else np.logical_and.accumulate(ok, axis=1).sum(axis=1)
    return np.add(run, 1, dtype=np.int64, out=out)  # (one pass: a buffer's millions of draws go through here)


class GainTable:
    """The gains of a span of a Lookahead's buffer, converted again when a step reads past the span or the
    Lookahead has drawn a new buffer. A span covers ``SPAN`` draws at most (or one step's), so a buffer a
    stretch's lookahead made long is never converted far ahead of the steps that read it."""

    SPAN = 1 << 16  # draws converted at a time

    __slots__ = ("acceptance", "buffer", "first", "gains", "last", "mtp", "size", "sums", "_room")

    def __init__(self, mtp: int, acceptance: float) -> None:
        self.mtp, self.acceptance = mtp, acceptance
        self.buffer: np.ndarray | None = None
        self.first = self.last = 0  # the span: groups of draws [first, last) of the buffer
        self.size = 0  # last - first
        self.gains = self.sums = np.zeros(0, dtype=np.int64)
        self._room = (self.gains, np.zeros(1, dtype=np.int64))  # what ``gains`` and ``sums`` are views of

    def take(self, rng: Lookahead, sequences: int) -> tuple[np.ndarray, int]:
        """The next ``sequences`` gains of ``rng``'s stream, used up, and their total."""
        mtp = self.mtp
        count = sequences * mtp
        if rng.pos % mtp:  # the stream was used in other units: read the draws themselves
            gains = gains_of(rng.take(count), mtp, self.acceptance)
            return gains, int(gains.sum())
        group = rng.pos // mtp
        if rng.buffer is self.buffer and self.first <= group and group + sequences <= self.last:
            at = group - self.first  # within the converted span (``_span``'s test, without the call)
        else:
            at = self._span(rng, sequences)
        rng.pos += count
        return self.gains[at : at + sequences], self.sums.item(at + sequences) - self.sums.item(at)

    def peek(self, rng: Lookahead, sequences: int) -> np.ndarray:
        """The next ``sequences`` gains of ``rng``'s stream, not used up (a stretch's plan looks ahead)."""
        if rng.pos % self.mtp:
            return gains_of(rng.peek(sequences * self.mtp), self.mtp, self.acceptance)
        at = self._span(rng, sequences)
        return self.gains[at : at + sequences]

    def _span(self, rng: Lookahead, sequences: int) -> int:
        """Where the stream's next ``sequences`` gains start in ``gains`` (the span converted anew if needed)."""
        mtp = self.mtp
        if sequences * mtp > rng.buffer.size - rng.pos:
            rng.peek(sequences * mtp)
        buffer, group = rng.buffer, rng.pos // mtp  # a buffer starts at a group's first draw (steps use whole groups)
        if buffer is not self.buffer or group < self.first or group + sequences > self.last:
            self.buffer, self.first = buffer, group
            self.last = min(buffer.size // mtp, group + max(sequences, self.SPAN // mtp))
            self.size = size = self.last - group
            gains, sums = self._room
            if gains.size < size:
                gains, sums = self._room = np.empty(size, dtype=np.int64), np.zeros(size + 1, dtype=np.int64)
            self.gains, self.sums = gains[:size], sums[: size + 1]  # (sums[0] stays 0)
            gains_of(buffer[group * mtp : self.last * mtp], mtp, self.acceptance, out=self.gains)
            np.cumsum(self.gains, out=self.sums[1:])
        return group - self.first
