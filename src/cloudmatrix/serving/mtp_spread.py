"""A spread of MTP acceptance across requests. The decode steps draw each draft token's acceptance at one rate
for every sequence, so every request of a run decodes at the same mean pace. Measured runs do not: on
random-token prompts some requests accept far fewer drafts than others, and since the ranks of a DP-attention
decode step together, such a request's TPOT is longer by the ratio of the accept lengths. A run of a few
dozen requests lasts as long as its slowest one, so the spread sets its throughput.

Each request's acceptance rate is drawn once (normal about the run's rate, clipped to [0, 1]); its decode is
given the work (tokens at the run's rate) that takes as many steps as its own rate would: its tokens scaled by
the run's accept length over its own. The scale is normalised so the run's total steps, and so its accept
length (tokens over steps, as SGLang prints it), are those of the common rate."""

from __future__ import annotations

from typing import Protocol

import numpy as np


def accept_length(acceptance: np.ndarray, mtp: int) -> np.ndarray:
    """Tokens a step gives on average at each acceptance rate: 1 + a + ... + a^mtp."""
    return np.sum([acceptance**k for k in range(mtp + 1)], axis=0)


class Drafts(Protocol):
    """A decode pool's MTP settings (sim/scenario.py's DecodePool)."""

    @property
    def mtp(self) -> int: ...

    @property
    def mtp_acceptance(self) -> float: ...

    @property
    def mtp_spread(self) -> float: ...


def decode_work(output_len: np.ndarray, pool: Drafts, rng: np.random.Generator) -> np.ndarray:
    """Tokens each request's decode runs at the batch's rate (its output after the prefill's first token,
    scaled by its own acceptance), at least 1 wherever it has a token to decode; the total stays the total
    of the unscaled outputs (to rounding)."""
    return request_work(output_len, pool.mtp, pool.mtp_acceptance, pool.mtp_spread, rng)


def request_work(
    output_len: np.ndarray, mtp: int, acceptance: float, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """``decode_work`` for a depth, a rate and a spread."""
    tokens = np.maximum(np.asarray(output_len, dtype=np.int64) - 1, 0)
    own = np.clip(rng.normal(acceptance, spread, tokens.size), 0.0, 1.0)
    steps = tokens / accept_length(own, mtp)  # steps each request takes at its own rate
    total = steps.sum()
    if total <= 0:
        return tokens
    work = np.rint(steps * (tokens.sum() / total)).astype(np.int64)
    return np.where(tokens > 0, np.maximum(work, 1), 0)
