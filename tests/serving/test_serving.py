import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.serving.prefill import PrefillQueue
from cloudmatrix.serving.requests import RequestTable
from cloudmatrix.serving.router import CacheAwareRouter, least_loaded


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 40)), max_size=60))
def test_decode_admission_never_overflows_kv(requests) -> None:
    pools = KvBlockPools(num_dies=4, capacity_blocks=50, block_tokens=16)
    batch = DecodeBatch(4, 3, pools, mtp=1, acceptance=0.5)
    rng = np.random.default_rng(0)
    for rid, (_, blocks) in enumerate(requests):
        die = batch.choose_die(blocks)
        if die is not None:
            slot = batch.reserve(rid, die, blocks)
            batch.activate(slot, 100, 5)
        assert (pools.used <= pools.capacity).all() and (batch.occupied <= 3).all()
        if rid % 3 == 2 and batch.num_active:
            batch.step(rng)
        assert pools.used.sum() == batch.blocks.sum()


def test_decode_step_conserves_tokens() -> None:
    pools = KvBlockPools(num_dies=2, capacity_blocks=100, block_tokens=16)
    batch = DecodeBatch(2, 4, pools, mtp=2, acceptance=0.7)
    for rid in range(6):
        slot = batch.reserve(rid, batch.choose_die(2), 2)
        batch.activate(slot, 50, 10 + rid)
    rng, finished, total = np.random.default_rng(1), [], 0
    while batch.num_active:
        stepped, gained, done = batch.step(rng)
        assert len(stepped) == len(gained) and gained.min() >= 1
        finished += done.tolist()
        total += int(gained.sum())
    assert sorted(finished) == list(range(6)) and total == sum(10 + r for r in range(6))
    assert pools.used.sum() == 0 and batch.occupied.sum() == 0


def test_request_state_machine_enforces_order() -> None:
    t = RequestTable(np.array([10]), np.array([5]))
    t.arrive(0, 0.0)
    with pytest.raises(RuntimeError):
        t.start_decode(0, 1.0)
    t.start_prefill(0, 1.0)
    t.end_prefill(0, 2.0)
    t.admit_decode(0, 2.0)
    t.start_decode(0, 3.0)
    t.finish(np.array([0]), 4.0)
    with pytest.raises(RuntimeError):
        t.finish(np.array([0]), 5.0)


def test_prefill_queue_budget() -> None:
    q = PrefillQueue(budget_tokens=10_000)
    for rid, tokens in enumerate([4000, 4000, 4000, 20000]):
        q.push(rid, tokens)
    assert [r for r, _ in q.next_batch()] == [0, 1]
    assert [r for r, _ in q.next_batch()] == [2]
    assert [r for r, _ in q.next_batch()] == [3]  # an oversize prompt runs alone
    assert q.queued_tokens == 0


def test_routers() -> None:
    assert least_loaded([5, 2, 2]) == 1
    r = CacheAwareRouter(slack_tokens=10)
    assert r.choose([0, 0], prefix=7) == 0
    assert r.choose([5, 0], prefix=7) == 0  # sticky within the slack
    assert r.choose([50, 0], prefix=7) == 1  # too busy: least loaded wins
