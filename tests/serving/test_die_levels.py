"""The per-die counts behind admission and step shapes answer as a scan of every die would: the least-occupied
die (lowest number first), the busiest die's count, and a decode batch's choice of die, with dies a fault
fenced and sequences a fault evicted."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.die_levels import Highest, LeastFirst
from cloudmatrix.serving.kv_pool import KvBlockPools


@settings(max_examples=80, deadline=None)
@given(dies=st.integers(1, 9), moves=st.lists(st.tuples(st.integers(0, 8), st.booleans()), max_size=300))
def test_counts_answer_as_a_scan(dies: int, moves: list[tuple[int, bool]]) -> None:
    least, high, counts = LeastFirst(dies), Highest(dies, 300), [0] * dies
    # the same moves in runs of one direction, each run in one call (``shift``, ``drop``: a group of finishes)
    least_runs, high_runs, run, up_run = LeastFirst(dies), Highest(dies, 300), list[int](), True
    for die, up in moves:
        die %= dies
        if not up and counts[die] == 0:
            continue
        delta = 1 if up else -1
        counts[die] += delta
        least.add(die, delta)
        high.add(die, delta)
        assert least.first() == int(np.argmin(counts))  # argmin: the lowest index on a tie
        assert high.high == max(counts)
        if up != up_run:
            _apply_run(least_runs, high_runs, run, up_run)
            run, up_run = [], up
        run.append(die)
    _apply_run(least_runs, high_runs, run, up_run)
    assert least_runs.count == high_runs.count == counts
    assert high_runs.high == max(counts) and least_runs.first() == int(np.argmin(counts))


@settings(max_examples=80, deadline=None)
@given(dies=st.integers(1, 9), moves=st.lists(st.integers(-9, 9), max_size=300))
def test_bumping_the_first_die_is_adding_to_it(dies: int, moves: list[int]) -> None:
    """``bump_first`` (an admission onto the least-occupied die) leaves the counts and answers of ``add``."""
    bumped, added = LeastFirst(dies), LeastFirst(dies)
    for move in moves:
        if move >= 0:  # an admission onto the least-occupied die
            assert bumped.first() == added.first()
            bumped.bump_first(bumped.first())
            added.add(added.first(), 1)
        elif added.count[-move % dies]:  # a finish anywhere
            bumped.add(-move % dies, -1)
            added.add(-move % dies, -1)
        assert bumped.count == added.count and bumped.first() == added.first()


def _apply_run(least: LeastFirst, high: Highest, dies: list[int], up: bool) -> None:
    high.shift(dies, 1 if up else -1)
    if up:
        for die in dies:
            least.add(die, 1)
    else:
        least.drop(dies)


def _scan(batch: DecodeBatch, blocks: int) -> int | None:
    """The rule as a scan of every die: the least occupied with a free slot and room, lowest number first."""
    fits = [
        d
        for d in range(batch.num_dies)
        if batch.occupied[d] < batch.cap
        and batch.pools.used[d] + blocks <= batch.pools.capacity
        and not batch.fenced[d]
    ]
    return min(fits, key=lambda d: (batch.occupied[d], d)) if fits else None


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "add", "step", "drop", "fence", "evict"]), st.integers(1, 30)), max_size=80
    )
)
def test_choose_die_is_the_scan(ops: list[tuple[str, int]]) -> None:
    batch = DecodeBatch(4, 3, KvBlockPools(4, 40, 16), 1, 0.5)
    rng = np.random.default_rng(3)
    for rid, (op, value) in enumerate(ops):
        if op == "add":
            die = batch.choose_die(value)
            assert die == _scan(batch, value)
            if die is not None:
                batch.activate(batch.reserve(rid, die, value), 10, 1 + value % 4)
        elif op == "step" and batch.num_active:
            batch.step(rng)
        elif op == "drop" and batch.num_active:
            batch.release(int(batch.active_slots()[value % batch.num_active]))
        elif op == "fence":  # a fault fences a die, or its repair lifts the fence
            batch.fenced[value % batch.num_dies] ^= True
        elif op == "evict":
            _evict_only(batch, np.array([value % batch.num_dies, (value // 4) % batch.num_dies]))
        _consistent(batch)


def _evict_only(batch: DecodeBatch, dies: np.ndarray) -> None:
    """Evicting the sequences on ``dies`` releases those and only those, reporting what each had left."""
    slots, remaining, rid = batch.active_slots().copy(), batch.remaining, batch.rid
    on = np.isin(slots // batch.cap, dies)
    rids, left = batch.evict(dies)
    assert rids.tolist() == rid[slots[on]].tolist() and left.tolist() == remaining[slots[on]].tolist()
    assert batch.active_slots().tolist() == slots[~on].tolist()


def _consistent(batch: DecodeBatch) -> None:
    """The incremental counts agree with the per-slot facts, and an emptied batch steps to nothing."""
    active, occupied = batch.active, batch.rid >= 0
    assert batch.active_per_die.tolist() == active.reshape(batch.num_dies, -1).sum(axis=1).tolist()
    assert batch.occupied.tolist() == occupied.reshape(batch.num_dies, -1).sum(axis=1).tolist()
    assert batch.kv_total == int(batch.kv[active].sum()) and batch.num_active == int(active.sum())
    assert batch.used_blocks == int(batch.pools.used.sum()) == int(batch.blocks.sum())
    if not batch.num_active:
        assert batch.run_step(np.random.default_rng(0)).size == 0 and batch.last_tokens == 0


def _state(batch: DecodeBatch) -> tuple[object, ...]:
    batch.active_slots()
    return (
        batch.rid.tolist(),
        batch.blocks.tolist(),
        batch.remaining.tolist(),
        batch.occupied.tolist(),
        batch.active_per_die.tolist(),
        batch.pools.used.tolist(),
        batch.kv_total,
        batch.used_blocks,
        batch.free_slots,
        batch.shape()[0] if batch.num_active else 0,
        batch.decoding()[0].tolist(),
    )


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.lists(st.tuples(st.integers(1, 200), st.integers(1, 6)), min_size=1, max_size=8), max_size=12),
    fence=st.integers(-1, 3),
)
def test_group_calls_are_one_call_after_another(groups: list[list[tuple[int, int]]], fence: int) -> None:
    """Admitting, landing and finishing a group in one call (``admit_all``, ``activate_all``, the steps' finish
    of several sequences) leaves the batch exactly as one ``admit`` and one ``activate`` after another do."""
    one, many = (DecodeBatch(4, 3, KvBlockPools(4, 30, 16), 1, 0.7) for _ in range(2))
    if fence >= 0:
        one.fenced[fence] = many.fenced[fence] = True
    rid, draws_one, draws_many = 0, np.random.default_rng(5), np.random.default_rng(5)
    for group in groups:
        rids = list(range(rid, rid + len(group)))
        rid += len(group)
        slots = []
        for r, (tokens, _) in zip(rids, group, strict=True):
            slot = one.admit(r, tokens)
            if slot is None:
                break
            slots.append(slot)
        assert many.admit_all(rids, [tokens for tokens, _ in group]) == slots
        lefts = [left for _, left in group[: len(slots)]]
        contexts = [max(tokens - left, 1) for tokens, left in group[: len(slots)]]
        for slot, context, left in zip(slots, contexts, lefts, strict=True):
            one.activate(slot, context, left)
        many.activate_all(slots, contexts, lefts)
        assert _state(one) == _state(many)
        if one.num_active:  # steps finish several sequences at once
            assert one.run_step(draws_one).tolist() == many.run_step(draws_many).tolist()
            assert _state(one) == _state(many)
        _consistent(many)
