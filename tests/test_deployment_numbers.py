"""Counts given as integral floats (9.0 chips from YAML, JSON or arithmetic) are held as ints, so every path
downstream prices them exactly as the ints (hypothesis found 9.0 chips ending in a TypeError)."""

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.deployment import _NUMBERS, INTEGER_FIELDS, Deployment, Phase
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import estimate
from cloudmatrix.inputs import check_number, check_optional


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


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 8, 9, 0.5, 1.0, 1e6, 1e6 + 1, 10_000_000, 20_000_000, 20_000_001, -0.0]),
    st.text(max_size=3),
)


def _one_check_each(d: object) -> str:
    """The checks one call per field (check_number, check_optional) in the table's order: what the
    inline fast path of ``check_deployment_numbers`` must accept and refuse alike."""
    try:
        for name, label, lo, hi, integer, optional in _NUMBERS:
            check = check_optional if optional else check_number
            check(label, getattr(d, name), lo=lo, hi=hi, integer=integer)
    except CloudMatrixError as e:
        return str(e)
    return "ok"


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from([n for n, *_ in _NUMBERS]), value=_ANY_VALUE)
def test_the_fast_checks_accept_and_refuse_as_the_one_by_one_checks(field: str, value: object) -> None:
    """Every field, every kind of value (bools, NaN, infinities, huge ints, text, None, the bounds): the
    deployment is made, or refused with the same message, as the field's own check_number says."""
    base = Deployment(phase=Phase.DECODE, num_chips=16, batch_per_chip=8)
    probe = object.__new__(Deployment)
    object.__setattr__(probe, "__dict__", dict(base.__dict__, **{field: value}))
    want = _one_check_each(probe)
    try:
        dataclasses.replace(base, **{field: value})
        got = "ok"
    except CloudMatrixError as e:
        got = str(e)
    assert got == want
