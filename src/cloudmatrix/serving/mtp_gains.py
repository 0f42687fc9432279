"""MTP gains read off the acceptance draws a buffer at a time. A decode step gives each active sequence 1 +
its accepted draft tokens (the leading run of its ``mtp`` draws below the acceptance rate). Rather than
compare a step's few hundred draws anew at every step, the gains of a whole buffer of draws (a
``workload.rng.Lookahead``'s) are computed once with their running sums: a step then takes a slice, and its
token count is a difference of two sums. The numbers are the draws' own, so the steps are unchanged."""

from __future__ import annotations

import numpy as np

from cloudmatrix.workload.rng import Lookahead


def gains_of(draws: np.ndarray, mtp: int, acceptance: float) -> np.ndarray:
    """1 + the leading run of accepted drafts, per group of ``mtp`` consecutive draws (mtp >= 1)."""
    ok = draws.reshape(-1, mtp) < acceptance
    run = ok[:, 0] if mtp == 1 else np.logical_and.accumulate(ok, axis=1).sum(axis=1)
    return run.astype(np.int64) + 1


class GainTable:
    """The gains of the draws in one Lookahead buffer, rebuilt when the Lookahead draws a new buffer."""

    __slots__ = ("acceptance", "buffer", "gains", "mtp", "sums")

    def __init__(self, mtp: int, acceptance: float) -> None:
        self.mtp, self.acceptance = mtp, acceptance
        self.buffer: np.ndarray | None = None
        self.gains = self.sums = np.zeros(0, dtype=np.int64)

    def take(self, rng: Lookahead, sequences: int) -> tuple[np.ndarray, int]:
        """The next ``sequences`` gains of ``rng``'s stream, used up, and their total."""
        mtp = self.mtp
        count = sequences * mtp
        if rng.pos % mtp:  # the stream was used in other units: read the draws themselves
            gains = gains_of(rng.take(count), mtp, self.acceptance)
            return gains, int(gains.sum())
        if count > rng.buffer.size - rng.pos:
            rng.peek(count)
        buffer = rng.buffer
        if buffer is not self.buffer:  # a new buffer starts at a group's first draw (steps use whole groups)
            self.buffer = buffer
            self.gains = gains_of(buffer[: buffer.size // mtp * mtp], mtp, self.acceptance)
            self.sums = np.concatenate([[0], np.cumsum(self.gains)])
        first = rng.pos // mtp
        rng.pos += count
        return self.gains[first : first + sequences], self.sums.item(first + sequences) - self.sums.item(first)
