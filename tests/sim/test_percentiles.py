"""The run's percentiles are numpy's ("linear") to the bit, for any values: ties, infinities, NaNs, one value."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.sim.metrics import PCTS, percentiles

_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
_PCTS = st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=6)


def _bits(values: list[float]) -> bytes:
    return np.array(values, dtype=np.float64).tobytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(_FLOATS, min_size=1, max_size=60), _PCTS)
def test_percentiles_are_numpys_to_the_bit(values: list[float], pcts: list[float]) -> None:
    a = np.array(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf in both: NaN, as numpy gives it
        assert _bits(percentiles(a, pcts)) == _bits(np.percentile(a, pcts).tolist())


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=5000), st.integers(min_value=0, max_value=2**32 - 1))
def test_the_runs_percentiles_of_many_latencies(n: int, seed: int) -> None:
    a = np.random.default_rng(seed).lognormal(size=n).round(3)  # rounded: many ties
    assert _bits(percentiles(a, PCTS)) == _bits(np.percentile(a, PCTS).tolist())


def test_the_values_are_left_as_they_were() -> None:
    a = np.array([3.0, 1.0, 2.0])
    percentiles(a, PCTS)
    assert a.tolist() == [3.0, 1.0, 2.0]
