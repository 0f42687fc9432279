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
from cloudmatrix.studies.interval_steps import (
    combined_spread,
    counted_steps,
    independent_steps,
    step_error,
    step_spread,
)
from cloudmatrix.studies.intervals import Query, index_residuals, query_interval

from .residual_rows import spread_rows


def _rows(kind: str, system: str, stack: str, ratio: float, spread: float, n: int = 12, **extra) -> list[dict]:
    """``n`` rows of one (family, stack) cell from three series, measured / predicted spread about ``ratio``."""
    return spread_rows(kind, system, stack, ratio, spread, tag=f"{kind}-{system}-{stack}", n=n, **extra)


VALIDATED = _rows("series", "hgx-b200", "vllm", 1.0, 0.1)
FAMILY = _rows("family", "hgx-b200", "vllm", 1.2, 0.6)
STACK = _rows("stack", "hgx-b200", "sglang", 0.8, 0.9)
MODEL = _rows("model", "hgx-b200", "vllm", 1.1, 0.7)
TABLE = index_residuals(VALIDATED + FAMILY + STACK + MODEL, "tpot_ms")


def test_independent_steps_add_in_quadrature() -> None:
    """A new family with a stack new everywhere (leave-stack-and-family-out) and a new model: the spreads of the
    family, stack and model hold-outs add in quadrature about the prediction, wider than any one and narrower
    than their sum, with the in-domain error their rows all hold (the series hold-out's) counted once."""
    q = Query(system="hgx-h100", stack="atom", metric="tpot_ms", model="kimi-k2", host_times="unfitted")
    iv = query_interval(100.0, q, table=TABLE)
    assert iv.extrapolating[1:] == (
        "chip family hopper has no rows",
        "model kimi-k2 has no rows in the cells one condition away",
    )
    spreads = [step_spread(rows, 0.8) for rows in (FAMILY, STACK, MODEL)]
    inside = step_spread(VALIDATED, 0.8)  # no step row was predicted by the series hold-out: every series row
    want = combined_spread(spreads, [inside] * 3)
    widest = max(spreads)
    assert want == pytest.approx(math.sqrt(sum(s * s for s in spreads) - 2 * inside**2))  # counted once, not 3 times
    assert widest < want < combined_spread(spreads) < sum(spreads)
    assert combined_spread(spreads) == pytest.approx(math.sqrt(sum(s * s for s in spreads)))
    assert iv.lo is not None and iv.hi is not None
    assert (iv.lo, iv.hi) == (pytest.approx(100 * math.exp(-want)), pytest.approx(100 * math.exp(want)))


@settings(max_examples=200, deadline=None)
@given(
    spreads=st.lists(st.floats(1e-3, 3.0), min_size=1, max_size=5),
    data=st.data(),
)
def test_the_in_domain_error_counts_once_and_never_narrows(spreads: list[float], data) -> None:
    """Whatever the steps' spreads and their rows' in-domain spreads: never narrower than the widest step
    alone, nor wider than plain quadrature; a further step never narrows; with no in-domain error it is
    quadrature, and a step whose rows err no more out of group than in it adds nothing."""
    inside = data.draw(st.lists(st.floats(1e-3, 3.0), min_size=len(spreads), max_size=len(spreads)))
    got = combined_spread(spreads, inside)
    assert max(spreads) <= got * (1 + 1e-12) and got <= combined_spread(spreads) * (1 + 1e-12)
    assert combined_spread(spreads, [0.0] * len(spreads)) == pytest.approx(combined_spread(spreads))
    extra = data.draw(st.floats(1e-3, 3.0))
    assert combined_spread([*spreads, extra], [*inside, data.draw(st.floats(1e-3, 3.0))]) >= got * (1 - 1e-12)
    if extra <= max(spreads):  # a step whose rows err no more out of group than in it, not the widest
        assert combined_spread([*spreads, extra], [*inside, extra]) == pytest.approx(got)


def test_a_stratum_left_empty_by_a_new_condition_is_not_stepped_again() -> None:
    """A new family takes its stack's cell on it with it (its hold-out held every cell of the family out, the
    stack priced with its fit on other families): a stack with rows elsewhere is not stepped again, a stack
    with none anywhere is. So is a model new everywhere beside a stack new on a family. The reasons stay."""
    known = Query(system="hgx-h100", stack="vllm", metric="tpot_ms", host_times="unfitted")
    assert counted_steps(known, TABLE, ["family", "stack"]) == ["family"]
    assert counted_steps(replace(known, stack="atom"), TABLE, ["family", "stack"]) == ["family", "stack"]
    iv = query_interval(100.0, known, table=TABLE)
    q = step_spread(FAMILY, 0.8)
    assert iv.lo is not None and iv.hi is not None
    assert (iv.lo, iv.hi) == (pytest.approx(100 * math.exp(-q)), pytest.approx(100 * math.exp(q)))
    on_b200 = Query(system="hgx-b200", stack="trtllm", metric="tpot_ms", model="kimi-k2", host_times="unfitted")
    assert counted_steps(on_b200, TABLE, ["stack", "model"]) == ["stack", "model"]  # trtllm: no rows anywhere
    sglang = replace(on_b200, stack="sglang")
    assert counted_steps(sglang, TABLE, ["stack", "model"]) == ["model"]  # a new model, sglang has rows
    assert counted_steps(replace(sglang, model="gpt-oss-120b"), TABLE, ["stack", "model"]) == ["stack", "model"]
    # ISL and concurrency steps are conditions of their own, never implied
    assert counted_steps(known, TABLE, ["family", "stack", "isl", "band"]) == ["family", "isl", "band"]


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
    """Two rows of one deployment on CDNA do not validate the family: SGLang there takes the family step and
    says why (SGLang has rows on Blackwell, so its cell on the new family is not stepped again; a stack with no
    rows anywhere would add its own, in quadrature); with a validated CDNA cell it takes the stack step alone."""
    thin = _rows("series", "mi300x", "atom", 1.0, 0.1, n=2)
    table = index_residuals(VALIDATED + FAMILY + STACK + thin, "tpot_ms")
    q = Query(system="mi300x", stack="sglang", metric="tpot_ms", host_times="unfitted")
    iv = query_interval(100.0, q, table=table)
    assert iv.extrapolating == (
        "host times of sglang are not fitted on cdna",
        "chip family cdna has no cell of 8 rows from 3 deployments (only 2 rows from 2 deployments)",
    )
    assert iv.lo is not None and iv.hi is not None
    lo, hi = series_quantiles(STACK, [0.1, 0.9])  # SGLang's validated cell on Blackwell: the least width
    assert iv.hi / iv.lo == pytest.approx(max(math.exp(2 * step_spread(FAMILY, 0.8)), hi / lo))
    new_stack = query_interval(100.0, replace(q, stack="atom-new"), table=table)
    inside = step_spread(VALIDATED + thin, 0.8)  # every series row: none of the steps' rows is among them
    both = combined_spread([step_spread(FAMILY, 0.8), step_spread(STACK, 0.8)], [inside] * 2)
    assert new_stack.lo is not None and new_stack.hi is not None
    assert new_stack.hi / new_stack.lo == pytest.approx(math.exp(2 * both))
    validated = index_residuals(VALIDATED + FAMILY + STACK + _rows("series", "mi300x", "atom", 1.0, 0.1), "tpot_ms")
    alone = query_interval(100.0, q, table=validated)
    assert alone.extrapolating[1] == "stack sglang has no rows on cdna"
    assert alone.hi is not None and alone.lo is not None
    assert alone.hi / alone.lo == pytest.approx(math.exp(2 * step_spread(STACK, 0.8)))


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


def test_a_step_whose_residuals_a_wider_step_holds_is_not_counted_again() -> None:
    """Holding out a model that alone gave a stack its fit rows prices that stack's rows as the stack hold-out
    does: the two steps' hold-outs then hold the same residuals (same row, same prediction), one draw of one
    error source, so a new model on a stack new everywhere takes the wider step alone. Priced differently by the
    two hold-outs (another prediction of the same rows), the stack step is a source of its own and counts."""
    shared = [r | {"kind": "model"} for r in STACK]
    own = _rows("model", "hgx-h100", "vllm", 1.3, 1.4)
    table = index_residuals(VALIDATED + STACK + shared + own, "tpot_ms")
    q = Query(system="hgx-b200", stack="trtllm", metric="tpot_ms", model="kimi-k2", host_times="unfitted")
    assert counted_steps(q, table, ["stack", "model"]) == ["stack", "model"]
    iv = query_interval(100.0, q, table=table)
    model = step_spread(shared + own, 0.8)
    assert model > step_spread(STACK, 0.8)
    assert iv.lo is not None and iv.hi is not None
    assert (iv.lo, iv.hi) == (pytest.approx(100 * math.exp(-model)), pytest.approx(100 * math.exp(model)))
    repriced = [r | {"predicted": r["predicted"] * 0.9} for r in shared]
    apart = query_interval(100.0, q, table=index_residuals(VALIDATED + STACK + repriced + own, "tpot_ms"))
    inside = step_spread(VALIDATED, 0.8)
    both = combined_spread([step_spread(repriced + own, 0.8), step_spread(STACK, 0.8)], [inside] * 2)
    assert apart.lo is not None and apart.hi is not None
    assert apart.hi / apart.lo == pytest.approx(math.exp(2 * both))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_only_a_step_held_whole_by_a_wider_one_drops(data) -> None:
    """Over any steps drawn from one pool of residuals: the widest always counts, and a step drops exactly when
    every residual of it is among the wider steps' (ties: the earlier), so never below the widest step alone."""
    pool = _rows("model", "hgx-b200", "vllm", 1.0, 1.5, n=20)
    pool = [r | {"measured": r["measured"] * (1 + 0.05 * i)} for i, r in enumerate(pool)]
    steps = data.draw(st.lists(st.lists(st.sampled_from(range(20)), min_size=1, unique=True), min_size=1, max_size=4))
    measured = [[pool[i] for i in s] for s in steps]
    counts = independent_steps(measured, 0.8)
    spreads = [step_spread(m, 0.8) for m in measured]
    widest = max(range(len(spreads)), key=lambda i: spreads[i])
    assert counts[widest]
    for i, c in enumerate(counts):
        wider = [j for j in range(len(steps)) if (spreads[j], -j) > (spreads[i], -i)]
        assert c == (not set(steps[i]) <= {k for j in wider for k in steps[j]})


def test_a_step_measured_on_another_host_time_basis_takes_its_rows_as_a_new_deployment() -> None:
    """The ISL hold-out of the band that holds every fit row prices its rows with no host time at all: their
    error holds that loss with the ISL step. A query at a new ISL whose host times are fitted does not take
    the loss, so where the step has no rows priced as it is, it meets those rows' error as the series
    hold-out predicted them (a new deployment); a query priced without fitted host times takes them as they
    are. Either way the answer is never narrower than with the ISL inside the domain, and says why."""
    series = _rows("series", "hgx-b200", "vllm", 1.0, 0.3, isl=8192, isl_band="ISL 8K")
    lost = [r | {"kind": "isl", "measured": r["measured"] * 3.0, "host_times": "unfitted"} for r in series]
    unfitted = _rows("family", "hgx-h100", "vllm", 1.0, 0.2, isl=8192, isl_band="ISL 8K")
    table = index_residuals(series + lost + unfitted, "tpot_ms")
    q = Query(system="hgx-b200", stack="vllm", metric="tpot_ms", isl=1024, host_times="fitted")
    iv = query_interval(100.0, q, table=table)
    assert iv.extrapolating == ("ISL 1,024 beyond the validated 8,192",)
    assert iv.lo is not None and iv.hi is not None
    inside = query_interval(100.0, replace(q, isl=8192), table=table)
    assert inside.lo is not None and inside.hi is not None
    assert iv.hi / iv.lo == pytest.approx(max(math.exp(2 * step_spread(series, 0.8)), inside.hi / inside.lo))
    assert iv.hi / iv.lo >= inside.hi / inside.lo
    as_lost = query_interval(100.0, replace(q, host_times="unfitted"), table=table)
    assert as_lost.lo is not None and as_lost.hi is not None
    assert as_lost.hi / as_lost.lo >= math.exp(2 * step_spread(lost, 0.8)) > iv.hi / iv.lo


@pytest.mark.parametrize(("system", "other"), [("hgx-b200", "hgx-h100"), ("hgx-h100", "hgx-b200")])
def test_a_step_met_as_priced_is_measured_where_it_is_taken_alike_first(system: str, other: str) -> None:
    """Where a fitted query's step has no rows priced as it is (every ISL hold-out row lost its host times),
    the step's rows stand as the series hold-out predicted them, and, as at every level of the fall-back,
    first where the step is taken alike: its own (family, stack) cell's, not every cell's pooled. A query
    priced without fitted host times still takes the rows of its own basis as they are."""
    spreads = {system: 0.2, other: 1.2}
    rows = []
    for s, spread in spreads.items():
        series = _rows("series", s, "vllm", 1.0, spread, isl=1024, isl_band="ISL 1K")
        rows += series + [
            r | {"kind": "isl", "measured": r["measured"] * 3.0, "host_times": "unfitted"} for r in series
        ]
    table = index_residuals(rows, "tpot_ms")
    q = Query(system=system, stack="vllm", metric="tpot_ms", isl=8192, host_times="fitted")
    mine = [r for r in rows if r["kind"] == "series" and r["system"] == system]
    pool = table.pools["fitted"]
    assert step_error("isl", pool, table, system, "vllm") == mine
    iv = query_interval(100.0, q, table=table)
    assert iv.lo is not None and iv.hi is not None
    assert iv.extrapolating == ("ISL 8,192 beyond the validated 1,024",)
    lo, hi = series_quantiles(mine, [0.1, 0.9])
    assert iv.hi / iv.lo == pytest.approx(max(hi / lo, math.exp(2 * step_spread(mine, 0.8))))
    pooled = [r for r in rows if r["kind"] == "series"]
    assert iv.hi / iv.lo < math.exp(2 * step_spread(pooled, 0.8))
    unfitted = step_error("isl", table.pools["unfitted"], table, system, "vllm")
    assert {r["host_times"] for r in unfitted} == {"unfitted"}


@settings(max_examples=60, deadline=None)
@given(
    theirs=st.sampled_from([0.05, 0.3, 1.0, 2.5]),
    excess=st.sampled_from([0.0, 0.2, 0.6]),
    mine=st.sampled_from([0.1, 0.4]),
)
def test_a_step_measured_on_other_cells_carries_what_it_adds_not_their_in_domain_error(
    theirs: float, excess: float, mine: float
) -> None:
    """A query inside its own validated cell (B200 vLLM) at a new model class takes the model step, measured on
    another cell's hold-out rows (H100 SGLang, priced as the query is). Those rows' in-domain error (their series
    hold-out's, ``theirs``) is that cell's, not the query's: the step carries to it only what it adds beyond that
    error, on top of the query's own. However wide the other cell errs as a new deployment, the answer is the
    same; it grows with the step's excess and never falls below the query's own in-domain width."""
    own = _rows("series", "hgx-b200", "vllm", 1.0, mine)
    total = math.hypot(theirs, excess)  # rows spread evenly in ln: quantiles scale with the spread
    other = _rows("series", "hgx-h100", "sglang", 1.0, theirs)
    scale = total / theirs  # the same rows held out with their model: the same draws, each further out
    step = [
        r | {"kind": "model", "measured": r["predicted"] * (r["measured"] / r["predicted"]) ** scale} for r in other
    ]
    table = index_residuals(own + other + step, "tpot_ms")
    q = Query(system="hgx-b200", stack="vllm", metric="tpot_ms", model_class="dsa")
    iv = query_interval(100.0, q, table=table)
    assert iv.extrapolating == ("model class dsa has no rows",)
    added = step_spread(step, 0.8) ** 2 - step_spread(other, 0.8) ** 2
    want = math.sqrt(max(added, 0.0) + step_spread(own, 0.8) ** 2)
    assert iv.lo is not None and iv.hi is not None
    base = series_quantiles(own, [0.1, 0.9])
    assert iv.hi / iv.lo == pytest.approx(max(math.exp(2 * want), base[1] / base[0]))
    inside = query_interval(100.0, replace(q, model_class="moe"), table=table)
    assert inside.lo is not None and inside.hi is not None
    assert iv.hi / iv.lo >= inside.hi / inside.lo * (1 - 1e-12)


@settings(max_examples=40, deadline=None)
@given(
    system=st.sampled_from(["hgx-b200", "gb200-nvl72"]),
    steady=st.integers(1, 7),
    cls=st.sampled_from([None, "moe"]),
)
def test_a_steady_query_is_inside_the_domain_its_end_to_end_runs_validate(system: str, steady: int, cls) -> None:
    """One step's per-chip throughput (what ``estimate`` answers) has few rows of its own; an end-to-end run's
    per-chip throughput is made of it. A (family, stack) cell thin in steady rows but validated end to end is
    inside the domain: no family, stack or class step, and its base is the two metrics' rows together. A family
    neither validates is still new."""
    ends = [r | {"metric": "output_tok_s_per_chip"} for r in _rows("series", system, "trtllm", 1.0, 0.3)]
    own = [
        r | {"metric": "throughput_per_chip_tok_s", "band": "steady"}
        for r in spread_rows("series", system, "trtllm", 1.1, 0.1, tag="steady", n=max(steady, 2))[:steady]
    ]
    table = index_residuals(ends + own, "throughput_per_chip_tok_s")
    q = Query(system=system, stack="trtllm", metric="throughput_per_chip_tok_s", model_class=cls, band="steady")
    iv = query_interval(100.0, q, table=table)
    assert iv.extrapolating == ()
    assert iv.lo is not None and iv.hi is not None
    lo, hi = series_quantiles(own + ends, [0.1, 0.9])
    assert (iv.lo, iv.hi) == (pytest.approx(100 * lo), pytest.approx(100 * hi))
    new = query_interval(100.0, replace(q, system="hgx-h100", stack="trtllm"), table=table)
    assert "chip family hopper has no rows" in new.extrapolating
