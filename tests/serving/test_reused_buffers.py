"""Draw buffers and gain spans are refilled into reused memory (no fresh pages per refill): the numbers stay the
generator's, in its order, through refills that keep unused draws in overlapping memory and spans converted again
into the same arrays; and a refill always hands out a new buffer object, which is how a gain table knows."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.serving.mtp_gains import GainTable, gains_of
from cloudmatrix.workload.rng import Lookahead


class _SmallSpans(GainTable):
    SPAN = 7  # spans converted again every few steps


@settings(max_examples=60, deadline=None)
@given(
    mtp=st.integers(1, 3),
    block=st.integers(1, 40),
    steps=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 90)), max_size=25),
)
def test_refills_into_reused_memory_keep_the_draws(mtp: int, block: int, steps: list[tuple[int, int]]) -> None:
    plain, ahead = np.random.default_rng(5), Lookahead(np.random.default_rng(5))
    ahead.BLOCK = block
    table = _SmallSpans(mtp, 0.6)
    for sequences, peek in steps:
        before = ahead.buffer
        ahead.peek(peek)
        if peek > before.size:  # more than any buffer so far held: a refill, under a new buffer object
            assert ahead.buffer is not before
        gains, total = table.take(ahead, sequences)
        want = gains_of(plain.random(sequences * mtp), mtp, 0.6)
        np.testing.assert_array_equal(gains, want)
        assert total == int(want.sum())
