"""Decode stretches (several steps advanced in one computation) give bit-identical runs to the step-by-step
reference path: every built-in scenario, closed and open loop, with and without MTP, and sampled validation
rows; plus the parts they rest on (draws with lookahead, vectorised step prices, exact running sums)."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.models import load_model
from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.sim.costs import KV_BUCKET_TOKENS, StepCosts
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.scenario import SCENARIO_DIR, Scenario, load_scenario
from cloudmatrix.studies.validate_run import fit_memory, scenario_for
from cloudmatrix.workload.rng import Lookahead

from .same_run import assert_same_run

BUILT_IN = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
CLOSED = "workload.arrivals={kind: closed, concurrency: 6}"


def _assert_identical(scenario: Scenario) -> None:
    """Both paths: the same requests, stamps, recorded steps and batches, and the same result to the bit."""
    assert_same_run(Simulation(scenario).run(), Simulation(scenario, step_by_step=True).run())


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("arrivals", ["open", "closed"])
def test_built_in_scenarios_match_step_by_step(name: str, arrivals: str) -> None:
    overrides = ["requests=120"] + ([CLOSED] if arrivals == "closed" else [])
    _assert_identical(load_scenario(name, overrides))


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("cm384-paper", ["decode.mtp=0", "decode.chips=16", "decode.ep=32", "prefill.instances=2"]),
        ("cm384-paper", ["decode.mtp=2", "decode.instances=1", "workload.output={kind: uniform, low: 1, high: 300}"]),
        ("cm384-paper", ["decode.chips=16", "decode.ep=32", "decode.batch_per_chip=2", "requests=200"]),
        ("cm384-paper", ["decode.instances=2", "decode.chips=16", "decode.ep=32", "prefill.instances=2"]),
        ("h200-colocated", ["aggregated.mtp=0", "aggregated.instances=1"]),
        ("h200-colocated", ["aggregated.mtp=3", "aggregated.mtp_acceptance=0.9", "aggregated.batch_per_chip=2"]),
        ("h200-colocated", ["duration_s=20"]),
    ],
)
def test_variants_match_step_by_step(name: str, overrides: list[str]) -> None:
    _assert_identical(load_scenario(name, ["requests=150", CLOSED, *overrides]))


def test_finishes_logged_per_loop_match_finishes_per_step() -> None:
    """A whole run logs and counts its inline steps' finishes once per loop (nothing reads them before); with a
    progress callback each is taken at its step, as before. Both give the same run, and progress sees every one."""
    scenario = load_scenario("cm384-paper", ["requests=3000"])
    seen: list[int] = []
    told = Simulation(scenario, progress=lambda done, _total: seen.append(done)).run()
    assert_same_run(Simulation(scenario).run(), told)
    assert seen == sorted(seen) and seen[-1] == 3000


def test_sampled_validation_rows_match_step_by_step() -> None:
    rows = [r for r in load_corpora() if r.kind == "e2e"]
    sample = random.Random(21).sample(rows, 4)
    sample += [r for r in rows if r.mtp][:1] + [r for r in rows if r.aggregated is None][:1]
    for row in sample:
        notes: list[str] = []
        scenario = fit_memory(scenario_for(row, load_model(row.model), notes), notes)
        clients = row.workload.concurrency or 1
        _assert_identical(scenario.model_copy(update={"requests": min(scenario.requests, 3 * clients, 300)}))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), max_size=30), peeks=st.integers(0, 5000))
def test_lookahead_draws_what_the_generator_draws(sizes: list[tuple[int, int]], peeks: int) -> None:
    plain, ahead = np.random.default_rng(7), Lookahead(np.random.default_rng(7))
    for rows, cols in sizes:
        ahead.peek(peeks)  # looking ahead never uses a number up
        np.testing.assert_array_equal(ahead.random((rows, cols)), plain.random((rows, cols)))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 50), max_size=30),
    peeks=st.lists(st.integers(0, 90), max_size=30),
    block=st.integers(1, 40),
)
def test_lookahead_refills_keep_the_generator_order(sizes: list[int], peeks: list[int], block: int) -> None:
    """Small refill blocks: every refill keeps the numbers not used yet and draws the rest after them."""
    plain, ahead = np.random.default_rng(3), Lookahead(np.random.default_rng(3))
    ahead.BLOCK = block
    for size, peek in zip(sizes, peeks, strict=False):
        seen = ahead.peek(peek).copy()
        np.testing.assert_array_equal(ahead.take(size), plain.random(size))
        np.testing.assert_array_equal(seen[size:], ahead.peek(max(peek - size, 0)))


def test_consuming_unseen_draws_is_refused() -> None:
    with pytest.raises(ValueError, match="never peeked"):
        Lookahead(np.random.default_rng(0)).consume(1)


def test_stretch_prices_are_the_step_prices() -> None:
    costs = StepCosts(load_scenario("h200-colocated"))
    means = np.array([1.0, 31.9, 32.0, 96.0, 160.0, 4096.5, 4128.0, 4159.99, 4160.0, 4161.0])
    means = np.concatenate([means, (np.arange(60, 70) + 0.5) * KV_BUCKET_TOKENS])  # half-way: round to even
    prices = costs.decode_steps_s(3, means)
    assert prices.tolist() == [costs.decode_step_s(3, float(m)) for m in means]


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "step", "drop", "advance"]), st.integers(0, 10**6)), max_size=60))
def test_running_sums_follow_the_slots(ops: list[tuple[str, int]]) -> None:
    batch = DecodeBatch(4, 3, KvBlockPools(4, 100, 16), 1, 0.5)
    rng = Lookahead(np.random.default_rng(1))
    for op, value in ops:
        if op == "add":
            die = batch.choose_die(2)
            if die is not None:
                batch.activate(batch.reserve(value, die, 2), 1 + value % 5000, 1 + value % 7)
        elif op == "step" and batch.num_active:
            batch.step(rng)
        elif op == "drop" and batch.num_active:
            active = np.flatnonzero(batch.active)
            batch.release(int(active[value % active.size]))
        elif op == "advance" and batch.num_active:
            idx = batch.active_slots()
            batch.advance(idx, np.full(idx.size, 1 + value % 3, dtype=np.int64))
        # the fewest tokens left, kept by every change (a stretch's plan reads it first)
        assert batch.min_left() == (int(batch.left().min()) if batch.num_active else 0)
        np.testing.assert_array_equal(batch.active_slots(), np.flatnonzero(batch.active))
        assert batch.kv_total == int(batch.kv[batch.active].sum())
        if batch.num_active:
            assert batch.shape() == (int(batch.active_per_die.max()), float(batch.kv[batch.active].mean()))
        assert batch.free_slots == batch.num_dies * batch.cap - int(batch.occupied.sum())
