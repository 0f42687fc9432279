"""A decode stretch is planned only when every sequence runs ``MIN_STEPS`` steps or more before it can finish
(a shorter stretch costs more to plan and apply than its steps): below the floor no stretch, above it one of at
least ``MIN_STEPS`` steps, for every MTP depth. Runs are identical either way (tests/sim/test_stretches.py)."""

import numpy as np
import pytest

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.decode_runner import MIN_STEPS, plan, plan_floor
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.workload.rng import Lookahead


def _batch(mtp: int, lefts: list[int]) -> DecodeBatch:
    batch = DecodeBatch(4, 8, KvBlockPools(4, 1000, 16), mtp, 0.99)
    for rid, left in enumerate(lefts):
        die = batch.choose_die(4)
        assert die is not None
        batch.activate(batch.reserve(rid, die, 4), 100, left)
    return batch


@pytest.mark.parametrize("mtp", [0, 1, 2, 3])
@pytest.mark.parametrize("others", [[], [500], [40, 900, 77]])
def test_no_stretch_at_or_below_the_floor_and_a_long_one_above(mtp: int, others: list[int]) -> None:
    costs = StepCosts(load_scenario("cm384-paper"))
    floor = plan_floor(mtp)
    assert floor == (MIN_STEPS - 1) * (1 + mtp)
    for low in range(1, floor + 8):
        batch = _batch(mtp, [low, *others])
        first_s = costs.decode_step_s(*batch.shape())
        stretch = plan(batch, costs, Lookahead(np.random.default_rng(low)), 0.0, float("inf"), first_s)
        if low <= floor:
            assert stretch is None
        else:  # each step gains 1 + mtp tokens at most: the first finish comes after MIN_STEPS - 1 steps or more
            assert stretch is not None and stretch.steps >= MIN_STEPS
