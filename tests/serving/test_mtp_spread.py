"""A spread of MTP acceptance across requests (serving/mtp_spread.py): each request's decode work keeps the
run's total and its accept length, follows the request's own rate, and in a simulated run widens the TPOT
spread and lengthens a single wave; without a spread (or without MTP) the run is the one it was."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.serving.mtp_spread import accept_length, request_work
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import load_scenario


@settings(max_examples=60, deadline=None)
@given(
    outputs=st.lists(st.integers(1, 5000), min_size=1, max_size=200),
    mtp=st.integers(1, 4),
    acceptance=st.floats(0.0, 1.0),
    spread=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_decode_work_keeps_the_total_and_every_request_with_a_token_to_decode(
    outputs: list[int], mtp: int, acceptance: float, spread: float, seed: int
) -> None:
    out = np.array(outputs)
    work = request_work(out, mtp, acceptance, spread, np.random.default_rng(seed))
    tokens = out - 1
    assert work.dtype == np.int64 and work.shape == out.shape
    np.testing.assert_array_equal(work == 0, tokens == 0)  # a one-token answer has nothing to decode
    # the total to rounding: at most half a token each, and the ones raised to a single token
    assert abs(int(work.sum()) - int(tokens.sum())) <= 0.5 * out.size + np.count_nonzero(tokens) + 1e-9


def test_without_a_spread_each_request_decodes_its_own_output() -> None:
    out = np.array([1, 2, 1000, 1500, 7])
    work = request_work(out, 3, 0.775, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(work, out - 1)


def test_a_request_that_accepts_less_decodes_longer_and_the_accept_length_is_kept() -> None:
    """Steps each request takes at the common rate are its tokens over its own accept length (to rounding),
    and all of them together take the steps of the common rate: the printed accept length."""
    rng = np.random.default_rng(3)
    out = np.full(20_000, 1001)
    own_rng = np.random.default_rng(3)
    work = request_work(out, 3, 0.775, 0.07, rng)
    own = np.clip(own_rng.normal(0.775, 0.07, out.size), 0.0, 1.0)
    order = np.argsort(own)
    assert np.all(np.diff(work[order]) <= 1)  # less acceptance, more work (rounding aside)
    assert abs(work.sum() / (out - 1).sum() - 1) < 1e-4
    assert accept_length(np.array([0.0, 1.0]), 3).tolist() == [1.0, 4.0]


def _single_wave(spread: float, mtp: int = 1) -> object:
    overrides = [
        "requests=64",
        "workload.arrivals={kind: closed, concurrency: 64}",
        f"decode.mtp={mtp}",
        f"decode.mtp_spread={spread}",
    ]
    return simulate(load_scenario("cm384-paper", overrides))


def test_no_spread_is_the_run_without_one_and_mtp_0_ignores_it() -> None:
    base = simulate(load_scenario("cm384-paper", ["requests=64", "workload.arrivals={kind: closed, concurrency: 64}"]))
    same = _single_wave(0.0)
    np.testing.assert_array_equal(base.table.finish_s, same.table.finish_s)
    plain = _single_wave(0.0, mtp=0)
    np.testing.assert_array_equal(plain.table.finish_s, _single_wave(0.2, mtp=0).table.finish_s)


@pytest.mark.parametrize("spread", [0.05, 0.1, 0.2])
def test_a_spread_widens_tpot_and_lengthens_a_single_wave(spread: float) -> None:
    narrow, wide = _single_wave(0.0), _single_wave(spread)
    ratio = lambda r: np.percentile(r.tpot_s(), 99) / np.median(r.tpot_s())  # noqa: E731
    assert ratio(wide) > ratio(narrow) + spread / 4  # the slowest request trails the median by more
    assert wide.sim_time_s > narrow.sim_time_s  # and the wave lasts as long as it does
    assert np.all(wide.table.state == narrow.table.state)  # every request is served either way
    assert wide.table.output_len.sum() == narrow.table.output_len.sum()
    again = _single_wave(spread)
    np.testing.assert_array_equal(wide.table.finish_s, again.table.finish_s)  # seeded: the same run
