"""How the steps outside the validated domain combine (issue 22's remaining gaps): independent kinds of step add
in quadrature; a step implied by another (a new family's formats) is not counted twice; a family with no
validated cell counts as new; and the cells one condition away set the least width as an answer for them
would draw on them (their own fit), not with the errors of the hold-outs that took their fit rows."""

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.residuals import FORMAT_PRECISION
from cloudmatrix.studies.interval_pools import series_quantiles
from cloudmatrix.studies.interval_steps import combined_spread, step_spread
from cloudmatrix.studies.intervals import Query, index_residuals, query_interval

from .residual_rows import residual


def _rows(kind: str, system: str, stack: str, ratio: float, spread: float, n: int = 12, **extra) -> list[dict]:
    """``n`` rows of one (family, stack) cell from three series, measured / predicted spread about ``ratio``."""
    return [
        residual(
            system,
            math.exp(spread * (i / (n - 1) - 0.5)) * ratio,
            kind=kind,
            id=f"{kind}-{system}-{stack}-{i}",
            series=f"{kind}-{system}-{stack}-s{i % 3}",
            stack=stack,
            model="gpt-oss-120b",
            host_times="fitted" if kind == "series" else "unfitted",
        )
        | extra
        for i in range(n)
    ]


VALIDATED = _rows("series", "hgx-b200", "vllm", 1.0, 0.1)
FAMILY = _rows("family", "hgx-b200", "vllm", 1.2, 0.6)
STACK = _rows("stack", "hgx-b200", "sglang", 0.8, 0.9)
MODEL = _rows("model", "hgx-b200", "vllm", 1.1, 0.7)
TABLE = index_residuals(VALIDATED + FAMILY + STACK + MODEL, "tpot_ms")


def test_independent_steps_add_in_quadrature() -> None:
    """A new family (with its stack's cell new on it) and a new model: the spreads of the family, stack and model
    hold-outs add in quadrature about the prediction, wider than any one and narrower than their sum."""
    q = Query(system="hgx-h100", stack="vllm", metric="tpot_ms", model="kimi-k2", host_times="unfitted")
    iv = query_interval(100.0, q, table=TABLE)
    assert iv.extrapolating[1:] == (
        "chip family hopper has no rows",
        "model kimi-k2 has no rows in the cells one condition away",
    )
    spreads = [step_spread(rows, 0.8) for rows in (FAMILY, STACK, MODEL)]
    want = combined_spread(spreads)
    assert want == pytest.approx(math.sqrt(sum(s * s for s in spreads)))
    assert max(spreads) < want < sum(spreads)
    assert iv.lo is not None and iv.hi is not None
    assert (iv.lo, iv.hi) == (pytest.approx(100 * math.exp(-want)), pytest.approx(100 * math.exp(want)))


@settings(max_examples=40, deadline=None)
@given(
    weights=st.sampled_from(sorted(FORMAT_PRECISION)), system=st.sampled_from(["hgx-h100", "mi300x", "atlas-800t-a3"])
)
def test_a_new_family_is_new_in_every_format_once(weights: str, system: str) -> None:
    """A family with no rows takes no separate weights step, whatever the format: the family hold-out held
    every format of the family out with it. On a validated family a format with no rows there still steps."""
    q = Query(system=system, stack="vllm", metric="tpot_ms", weights=weights, host_times="unfitted")
    iv = query_interval(100.0, q, table=TABLE)
    assert not any(r.startswith("weights ") for r in iv.extrapolating)
    inside = query_interval(100.0, replace(q, system="hgx-b200"), table=TABLE)
    stepped = any(r.startswith("weights ") for r in inside.extrapolating)
    assert stepped == (FORMAT_PRECISION[weights] != "fp8")


def test_a_family_with_no_validated_cell_counts_as_new() -> None:
    """Two rows of one deployment on CDNA do not validate the family: SGLang there takes the family step (with
    the stack's, in quadrature) and says why; with a validated CDNA cell it takes the stack step alone."""
    thin = _rows("series", "mi300x", "atom", 1.0, 0.1, n=2)
    table = index_residuals(VALIDATED + FAMILY + STACK + thin, "tpot_ms")
    q = Query(system="mi300x", stack="sglang", metric="tpot_ms", host_times="unfitted")
    iv = query_interval(100.0, q, table=table)
    assert iv.extrapolating == (
        "host times of sglang are not fitted on cdna",
        "chip family cdna has no cell of 8 rows from 3 deployments (only 2 rows from 2 deployments)",
    )
    both = combined_spread([step_spread(FAMILY, 0.8), step_spread(STACK, 0.8)])
    assert iv.lo is not None and iv.hi is not None and iv.hi / iv.lo == pytest.approx(math.exp(2 * both))
    validated = index_residuals(VALIDATED + FAMILY + STACK + _rows("series", "mi300x", "atom", 1.0, 0.1), "tpot_ms")
    alone = query_interval(100.0, q, table=validated)
    assert alone.extrapolating[1] == "stack sglang has no rows on cdna"
    assert alone.hi is not None and alone.lo is not None and alone.hi / alone.lo < iv.hi / iv.lo


def test_neighbours_set_the_least_width_as_their_own_answers_draw() -> None:
    """A neighbour validated on its own fit (the series hold-out) sets the least width with those rows, not
    with the wider errors its rows took when a hold-out removed its fit rows (those are steps' errors)."""
    took_fit = _rows("family", "hgx-b200", "vllm", 1.0, 3.0)  # the neighbour's rows priced without its fit
    narrow_stack = _rows("stack", "hgx-b200", "sglang", 1.0, 0.05)
    wide = _rows("series", "hgx-b200", "vllm", 1.0, 1.0)  # the neighbour's own answer: wider than the step
    table = index_residuals(wide + took_fit + narrow_stack, "tpot_ms")
    inside = query_interval(100.0, Query(system="hgx-b200", stack="vllm", metric="tpot_ms"), table=table)
    for host_times in ("fitted", "unfitted"):
        q = Query(system="hgx-b200", stack="trtllm", metric="tpot_ms", host_times=host_times)
        outside = query_interval(100.0, q, table=table)
        assert outside.lo is not None and outside.hi is not None and inside.lo is not None and inside.hi is not None
        assert outside.hi / outside.lo == pytest.approx(inside.hi / inside.lo)  # the neighbour's own width
        lo, hi = series_quantiles(took_fit, [0.1, 0.9])
        assert outside.hi / outside.lo < hi / lo  # ... not the hold-out that took its fit rows
