"""A decode step reads only the sequences near their end (``NEAR`` tokens left or fewer) and frees its finished
ones with the per-die counts written out in one loop: the same finishes, tokens, fewest-left and counts as the
whole-batch computation (a minimum, then a comparison) and as a scan of every die."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.die_levels import LeastFirst
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.serving.mtp_gains import gains_of
from cloudmatrix.workload.rng import Lookahead


def _reference_step(left: np.ndarray, rids: np.ndarray, gained: np.ndarray) -> tuple[list[int], int, int]:
    """The whole-batch step: (finished request ids, tokens generated, fewest left after; 0 with none left)."""
    after = left - gained
    ended = after <= 0
    tokens = int(np.minimum(gained, left).sum())
    survivors = after[~ended]
    return rids[ended].tolist(), tokens, int(survivors.min()) if survivors.size else 0


def _bits_match_counts(least: LeastFirst) -> None:
    """Each count's bits hold exactly the dies at that count, and ``first`` is the scan's answer."""
    for level, dies in least.bits.items():
        assert [d for d in range(len(least.count)) if dies >> d & 1] == [
            d for d, c in enumerate(least.count) if c == level
        ]
    assert least.first() == int(np.argmin(least.count))


@settings(max_examples=80, deadline=None)
@given(
    mtp=st.integers(0, 3),
    lookahead=st.booleans(),
    ops=st.lists(st.tuples(st.sampled_from(["add", "step", "step", "drop"]), st.integers(0, 10**6)), max_size=70),
)
def test_a_step_finishes_what_the_whole_batch_computation_finishes(
    mtp: int, lookahead: bool, ops: list[tuple[str, int]]
) -> None:
    batch = DecodeBatch(5, 4, KvBlockPools(5, 200, 16), mtp, 0.6)
    draws = np.random.default_rng(7)
    rng: Lookahead | np.random.Generator = Lookahead(draws) if lookahead else draws
    mirror = np.random.default_rng(7)  # the same draws, for the reference
    for op, value in ops:
        if op == "add":
            slots = batch.admit_all([value, value + 1], [1 + value % 40, 1 + value % 23])
            batch.activate_all(slots, [1 + value % 9] * len(slots), [1 + (value + k) % 6 for k in range(len(slots))])
        elif op == "step" and batch.num_active:
            rids, left = batch.decoding()
            left = left.copy()
            gained = gains_of(mirror.random(left.size * mtp), mtp, 0.6) if mtp else np.ones(left.size, np.int64)
            finished = batch.step_ids(rng)
            assert (finished, batch.last_tokens, batch.min_left()) == _reference_step(left, rids, gained)
        elif op == "drop" and batch.num_active:
            batch.release(int(batch.active_slots()[value % batch.num_active]))
        # the counts the finishes updated in place agree with the slots
        assert batch.active_per_die.tolist() == batch.active.reshape(5, -1).sum(axis=1).tolist()
        assert batch.occupied.tolist() == (batch.rid >= 0).reshape(5, -1).sum(axis=1).tolist()
        assert batch._busiest.high == int(batch.active_per_die.max())
        assert batch.kv_total == int(batch.kv[batch.active].sum())
        _bits_match_counts(batch._least)


@settings(max_examples=80, deadline=None)
@given(dies=st.integers(1, 70), moves=st.lists(st.tuples(st.integers(0, 69), st.integers(-2, 2)), max_size=200))
def test_bits_follow_the_counts(dies: int, moves: list[tuple[int, int]]) -> None:
    """Dies beyond a machine word (the 320 dies of a CloudMatrix384 decode instance) move between counts."""
    least = LeastFirst(dies)
    for die, delta in moves:
        die %= dies
        if least.count[die] + delta >= 0:
            least.add(die, delta)
        _bits_match_counts(least)
