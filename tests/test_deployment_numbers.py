"""Counts given as integral floats (9.0 chips from YAML, JSON or arithmetic) are held as ints, so every path
downstream prices them exactly as the ints (hypothesis found 9.0 chips ending in a TypeError)."""

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.deployment import INTEGER_FIELDS, Deployment, Phase
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import estimate


def test_every_integer_field_is_held_as_int() -> None:
    d = Deployment(phase=Phase.DECODE, num_chips=16.0, ep=32.0, batch_per_chip=8, kv_len=4096.0, tp=1.0, moe_tp=1.0)
    for name in INTEGER_FIELDS:
        value = getattr(d, name)
        assert value is None or type(value) is int, name


@settings(max_examples=15, deadline=None)
@given(chips=st.sampled_from([9, 16, 32]), batch=st.integers(1, 64))
def test_integral_floats_price_like_ints(chips: int, batch: int) -> None:
    ints = Deployment(phase=Phase.DECODE, num_chips=chips, batch_per_chip=batch, input_len=2048, output_len=256)
    floats = dataclasses.replace(ints, num_chips=float(chips), input_len=2048.0, output_len=256.0)
    assert _priced(ints) == _priced(floats)


def _priced(d: Deployment) -> object:
    """The estimate, or the refusal's message: both must be the same for 9 and 9.0 chips."""
    try:
        return estimate("cloudmatrix384", "deepseek-r1", d).to_dict()
    except CloudMatrixError as e:
        return str(e)
