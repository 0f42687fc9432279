"""MTP gains read off a buffer's table are the gains of the draws the step would take itself: any sequence
of step sizes, MTP 1-3, across buffer refills, with lookahead in between and a stream used in other units;
and a decode batch stepped from the table steps as one stepped from the draws."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.serving.mtp_gains import GainTable, gains_of
from cloudmatrix.workload.rng import Lookahead


def _reference(draws: np.ndarray, mtp: int, acceptance: float) -> np.ndarray:
    """1 + the leading run of accepted drafts, one sequence at a time."""
    out = []
    for group in draws.reshape(-1, mtp):
        run = 0
        while run < mtp and group[run] < acceptance:
            run += 1
        out.append(1 + run)
    return np.array(out, dtype=np.int64)


@settings(max_examples=60, deadline=None)
@given(
    mtp=st.integers(1, 3),
    acceptance=st.floats(0.0, 1.0),
    steps=st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 3000)), max_size=12),
    skew=st.booleans(),
)
def test_table_gains_match_the_draws(mtp: int, acceptance: float, steps: list[tuple[int, int]], skew: bool) -> None:
    plain, ahead = np.random.default_rng(3), Lookahead(np.random.default_rng(3))
    table = GainTable(mtp, acceptance)
    if skew:  # a stream already used in a unit other than whole groups: the table steps aside
        ahead.take(1)
        plain.random(1)
    for sequences, peek in steps:
        ahead.peek(peek)  # lookahead (a stretch's plan) never changes what a step takes
        gains, total = table.take(ahead, sequences)
        expected = _reference(plain.random(sequences * mtp), mtp, acceptance)
        np.testing.assert_array_equal(gains, expected)
        assert total == int(expected.sum())
    np.testing.assert_array_equal(gains_of(np.array([0.1, 0.9, 0.2, 0.3]), 2, 0.5), [2, 3])


@settings(max_examples=40, deadline=None)
@given(
    mtp=st.integers(1, 3),
    acceptance=st.floats(0.0, 1.0),
    joins=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 2)), min_size=1, max_size=40),
)
def test_batch_steps_from_the_table_match_steps_from_the_draws(
    mtp: int, acceptance: float, joins: list[tuple[int, int]]
) -> None:
    """A batch stepped with the table (a Lookahead) and one stepped with the draws themselves (a plain
    Generator): the same tokens, finishes and tokens left at every step, sequences joining as they go."""
    batches = [DecodeBatch(3, 8, KvBlockPools(3, 1000, 16), mtp, acceptance) for _ in range(2)]
    streams = [Lookahead(np.random.default_rng(11)), np.random.default_rng(11)]
    for rid, (left, steps_after) in enumerate(joins):
        for batch in batches:
            slot = batch.admit(rid, 64 + left)
            if slot is not None:
                batch.activate(slot, 64, left)
        for _ in range(steps_after):
            finished = [batch.run_step(rng) for batch, rng in zip(batches, streams, strict=True)]
            np.testing.assert_array_equal(finished[0], finished[1])
            assert batches[0].last_tokens == batches[1].last_tokens
            np.testing.assert_array_equal(batches[0].remaining, batches[1].remaining)
