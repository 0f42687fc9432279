"""Prediction intervals: series-weighted empirical quantiles of measured / predicted, the stratum fallback,
and calibration: leaving one series out at a time, the 80 % interval covers 70-90 % of its rows."""

import itertools
import json
import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import chip_family
from cloudmatrix.catalog.residuals import conc_band, stored_holdout_residuals, stored_residuals
from cloudmatrix.cli.app import app
from cloudmatrix.studies.interval_pools import paper_residuals
from cloudmatrix.studies.interval_steps import shape_spread, step_bounds
from cloudmatrix.studies.intervals import (
    MIN_ROWS,
    Query,
    _query,
    index_residuals,
    interval,
    query_interval,
    series_quantiles,
)

from .residual_rows import residual

KIND_SPREAD = {"series": 0.1, "family": 0.4, "stack": 0.3, "model": 0.25, "isl": 0.2, "band": 0.15}


def _row(series: str, ratio: float, system: str = "hgx-b200", metric: str = "tpot_ms", kind: str = "series") -> dict:
    return residual(
        system, ratio, kind=kind, id=f"{series}-{ratio}", series=series, model="gpt-oss-120b", metric=metric
    )


def test_series_weigh_the_same() -> None:
    rows = [_row("a", 1.0)] + [_row("b", 3.0)] * 3
    # weights 1, 1/3, 1/3, 1/3: CDF midpoints 0.25, 0.583, 0.75, 0.917, so the median interpolates to 2.5
    # (a row-weighted median would be 3.0: the larger series would decide alone)
    assert series_quantiles(rows, [0.5])[0] == pytest.approx(2.5)


def test_interval_scales_the_prediction() -> None:
    rows = [_row(f"s{i % 4}", r) for i, r in enumerate([0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 0.7, 1.0])]
    iv = interval(100.0, "hgx-b200", "vllm", "tpot_ms", residuals=rows)
    lo, hi = series_quantiles(rows, [0.1, 0.9])
    assert (iv.lo, iv.hi, iv.rows, iv.coverage) == (pytest.approx(100 * lo), pytest.approx(100 * hi), 8, 0.8)
    assert iv.stratum == "blackwell x vllm x moe x conc 1-8 x ISL 1K x tpot_ms" and iv.extrapolating == ()


def test_fallback_needs_rows_and_series() -> None:
    """A band with too few rows falls back to the (family, stack, class) stratum; one series is no basis."""
    wide = [dict(_row(f"t{i % 3}", 1.0 + 0.1 * i), band="conc 9-64", concurrency=32) for i in range(MIN_ROWS)]
    few = [_row(f"s{i % 4}", 2.0) for i in range(MIN_ROWS - 1)]
    q = Query(system="hgx-b200", stack="vllm", metric="tpot_ms", band="conc 1-8", model_class="moe")
    iv = query_interval(10.0, q, residuals=few + wide)
    assert iv.stratum == "blackwell x vllm x moe x ISL 1K x tpot_ms" and iv.rows == 2 * MIN_ROWS - 1
    one_series = [_row("only", 1.0) for _ in range(20)]
    iv = interval(10.0, "hgx-b200", "vllm", "tpot_ms", residuals=one_series)
    assert iv.lo is None and iv.note.startswith("unknown") and iv.to_dict()["stratum"] is None
    assert iv.label() == "unknown" and iv.to_dict()["unknown"] is True


def test_refused_rows_never_count() -> None:
    rows = [dict(_row(f"x{i % 4}", 1.0), status="refused") for i in range(12)]
    assert interval(10.0, "hgx-b200", "vllm", "tpot_ms", residuals=rows).lo is None


def test_no_stack_is_unknown() -> None:
    iv = interval(10.0, "atlas950-superpod", None, "tpot_ms", residuals=[_row("a", 1.0)] * 10)
    assert iv.lo is None and "no serving stack" in iv.note


def test_bias_is_stated_and_the_point_may_lie_outside() -> None:
    rows = [_row(f"s{i % 4}", 2.0 + 0.01 * i) for i in range(12)]
    iv = interval(10.0, "hgx-b200", "vllm", "tpot_ms", residuals=rows)
    assert iv.lo is not None and iv.lo > 10.0 and iv.bias_pct == pytest.approx(105.5, abs=0.5)
    assert "the point lies outside its interval" in iv.note


UNFITTED_KINDS = ("family", "stack", "model")  # as in the shipped table: these hold-outs take the fit rows


def _table() -> list[dict]:
    """A deterministic hold-out table: two families, two stacks, two model classes, two bands, and every
    kind of step with its own spread of errors; the kinds that take the fit rows are priced without fitted
    host times and biased, as in the shipped table."""
    rng = random.Random(0)
    rows = []
    for kind, spread in KIND_SPREAD.items():
        for system, stack, cls, conc in itertools.product(
            ("hgx-h100", "hgx-b200"), ("vllm", "sglang"), ("moe", "mla"), (4, 32)
        ):
            for i in range(6):
                series = f"{kind}-{system}-{stack}-{cls}-{i % 3}"
                unfitted = kind in UNFITTED_KINDS
                ratio = math.exp(rng.gauss(0.4 if unfitted else 0.05, spread))
                rows.append(
                    _row(series, ratio, system=system, kind=kind)
                    | {"stack": stack, "model_class": cls, "concurrency": conc, "band": conc_band(conc)}
                    | {"host_times": "unfitted" if unfitted else "fitted"}
                )
    return rows


TABLE = _table()
INDEX = index_residuals(TABLE, "tpot_ms")
MOVES = {
    "system": st.sampled_from(["mi300x", "cloudmatrix384", "atlas800-a2"]),
    "stack": st.sampled_from(["trtllm", "atom", "mindie"]),
    "model_class": st.sampled_from(["dense", "dsa"]),
    "isl": st.integers(4096, 1_000_000),
    "concurrency": st.integers(65, 100_000),
    "weights": st.sampled_from(["nvfp4", "int8", "bf16"]),
    "model": st.sampled_from(["qwen3-235b-a22b", "kimi-k2", "a-model-the-catalog-lacks"]),
}


def _q(
    system: str,
    stack: str,
    cls: str | None,
    isl: int | None,
    conc: int | None,
    weights: str | None,
    model: str | None = None,
) -> Query:
    return Query(
        system=system,
        stack=stack,
        metric="tpot_ms",
        model=model,
        model_class=cls,
        weights=weights,
        isl=isl,
        band=conc_band(conc),
        concurrency=conc,
    )


@settings(max_examples=200, deadline=None)
@given(
    system=st.sampled_from(["hgx-h100", "hgx-h200", "hgx-b200", "gb200-nvl72"]),
    stack=st.sampled_from(["vllm", "sglang"]),
    cls=st.sampled_from([None, "moe", "mla"]),
    isl=st.one_of(st.none(), st.integers(800, 1400)),
    conc=st.one_of(st.none(), st.integers(1, 64)),
    weights=st.sampled_from([None, "fp8"]),
    model=st.sampled_from([None, "gpt-oss-120b"]),
    host_times=st.sampled_from([None, "fitted", "unfitted"]),
    move=st.sampled_from(sorted(MOVES)),
    data=st.data(),
)
def test_extrapolation_never_narrows(
    system: str,
    stack: str,
    cls: str | None,
    isl: int | None,
    conc: int | None,
    weights: str | None,
    model: str | None,
    host_times: str | None,
    move: str,
    data,
) -> None:
    """Moving any one condition of a validated query outside the validated domain (a new chip family, a stack
    with no rows on the family, a new model class, weight format or model, a longer ISL, more clients), in
    either host-time pool, never makes the interval narrower (as a ratio hi / lo: it may move, since a step's
    error is a spread about the prediction), and names a reason; or the answer becomes unknown."""
    fields = {
        "system": system,
        "stack": stack,
        "model_class": cls,
        "isl": isl,
        "concurrency": conc,
        "weights": weights,
        "model": model,
    }
    inside = query_interval(100.0, replace(_q(*fields.values()), host_times=host_times), table=INDEX)
    assert inside.lo is not None and inside.hi is not None
    unfitted = (f"host times of {stack} are not fitted on {chip_family(system)}",)
    assert inside.extrapolating == (unfitted if host_times == "unfitted" else ())
    moved = _q(*(fields | {move: data.draw(MOVES[move])}).values())
    outside = query_interval(100.0, replace(moved, host_times=host_times), table=INDEX)
    if outside.lo is None or outside.hi is None:
        assert outside.note.startswith("unknown")
        return
    assert outside.hi / outside.lo >= inside.hi / inside.lo * (1 - 1e-12)
    assert len(outside.extrapolating) > len(inside.extrapolating)  # each step is named


runner = CliRunner()


def test_estimate_carries_intervals() -> None:
    res = runner.invoke(
        app,
        [
            "estimate",
            "--system",
            "hgx-h100",
            "--model",
            "deepseek-v3",
            "--phase",
            "decode",
            "--chips",
            "72",
            "--batch-per-chip",
            "64",
            "--precision",
            "fp8",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert set(d["intervals"]) == {"throughput_per_chip_tok_s", "tpot_ms"}
    iv = d["intervals"]["tpot_ms"]
    assert set(iv) >= {"lo", "hi", "coverage", "rows", "stratum", "metric"}
    assert iv["stratum"] is None or iv["lo"] < iv["hi"]


def test_cloudmatrix_draws_on_its_own_paper_rows() -> None:
    """CloudMatrix-Infer has no validation-corpus row: the CloudMatrix384's answer draws on the paper's
    predicted rows (reproduce), holds where they fall, and names that they are thin (no Ascend cell is
    validated, so the family and stack steps widen it)."""
    res = runner.invoke(app, ["estimate", "--batch-per-chip", "96", "--mtp", "1", "--mtp-acceptance", "0.7", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    paper = [
        r for r in paper_residuals(stored_holdout_residuals(), stored_residuals()) if r["stack"] == "cloudmatrix-infer"
    ]
    for path, iv in d["intervals"].items():
        own = [r for r in paper if r["metric"] == iv["metric"]]
        assert len({r["series"] for r in own}) >= 3 and len(own) < MIN_ROWS  # its own evidence, thin
        # a thin cell (a stack step), or, for a metric with no Ascend cell of 8 rows from 3 deployments, a
        # family that counts as new (the family and stack steps)
        thin_cell = f"stack cloudmatrix-infer has only {len(own)} rows from {len({r['series'] for r in own})} "
        first = iv["extrapolating"][0]
        assert first == thin_cell + "deployments on ascend" or first.startswith("chip family ascend has no cell of 8")
        lo, hi = series_quantiles(own, [0.1, 0.9])
        # the hull holds its own rows' interval (to the JSON's rounding) and more rows beside them
        assert iv["lo"] <= lo * d[path] + 1e-3 and iv["hi"] >= hi * d[path] - 1e-3 and iv["rows"] > len(own)


def test_host_times_split_the_residuals() -> None:
    """A stack whose host times were fitted on its family's rows draws on the fitted residuals; one priced
    with a default (SGLang on AMD) on the residuals predicted without fitted host times, and says so."""
    fitted = [_row(f"f{i % 3}", 1.0 + 0.01 * i) for i in range(9)]
    unfitted = [
        _row(f"u{i % 3}", 3.0 + 0.01 * i, system="mi300x") | {"stack": "sglang", "host_times": "unfitted"}
        for i in range(9)
    ]
    table = index_residuals(fitted + unfitted, "tpot_ms")
    on_b200 = query_interval(10.0, Query(system="hgx-b200", stack="vllm", metric="tpot_ms"), table=table)
    on_amd = query_interval(10.0, Query(system="mi300x", stack="sglang", metric="tpot_ms"), table=table)
    assert on_b200.hi is not None and on_b200.hi < 11.0 and on_b200.extrapolating == ()
    assert on_amd.lo is not None and on_amd.lo > 29.9
    assert on_amd.extrapolating == ("host times of sglang are not fitted on cdna",)
    # a held-out row states the basis it was priced with, whatever the catalog says of its stack
    held = Query(system="hgx-b200", stack="vllm", metric="tpot_ms", host_times="unfitted")
    assert query_interval(10.0, held, table=table).extrapolating[0] == "host times of vllm are not fitted on blackwell"


def test_compare_prints_an_interval_or_unknown_for_every_headline_figure() -> None:
    """Every system's TPOT, TTFT, decode and output tok/s per chip carry an 80 % interval or `unknown` in
    compare's table (CloudMatrix384 included, from its own paper rows), never a blank or a zero-width range."""
    import re

    from rich.console import Console

    from cloudmatrix.cli.render import COMPARE_INTERVALS, compare_interval_tables

    res = runner.invoke(app, ["compare", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    console = Console(width=400, record=True)
    console.print(compare_interval_tables(d, width=400)[0])  # one table at this width
    lines = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "│" in line}
    cell = re.compile(r"[\d,.]+ \((unknown|[\d,.]+–[\d,.]+)\)")
    for r in d["systems"]:
        if not r["feasible"]:
            continue
        cells = [c.strip() for c in lines[r["system"]].split("│")[2 : 2 + len(COMPARE_INTERVALS)]]
        assert all(cell.fullmatch(c) for c in cells), (r["system"], cells)
        for key, _, _ in COMPARE_INTERVALS:
            iv = r["intervals"][key]
            assert iv["unknown"] or iv["lo"] < iv["hi"], (r["system"], key)
    cm = next(r for r in d["systems"] if r["system"] == "cloudmatrix384")
    assert not any(cm["intervals"][key]["unknown"] for key, _, _ in COMPARE_INTERVALS)


def _cell(model: str, ratio: float, spread: float, kind: str = "series", n: int = 12, **extra) -> list[dict]:
    """``n`` rows of one model on (blackwell, vllm) from three series, measured / predicted about ``ratio``."""
    return [
        _row(f"{kind}-{model}-{i % 3}", ratio * (1 + spread * (i / (n - 1) - 0.5)), kind=kind)
        | {"model": model}
        | extra
        for i in range(n)
    ]


def test_a_model_with_no_rows_in_its_stratum_widens_by_the_model_holdout_error() -> None:
    """A model the query's stratum has no rows of takes the model hold-out's error (of the other models) as a
    spread about the prediction, inside the fitted pool too, and says so; the validated model does not; a
    model of the same architecture (DeepSeek-V3 beside R1's rows) counts as validated."""
    validated = _cell("deepseek-r1", 1.0, 0.1)
    held = _cell("gpt-oss-120b", 0.7, 0.2, kind="model") + _cell("qwen3-32b", 0.6, 0.2, kind="model")
    table = index_residuals(validated + held, "tpot_ms")
    base = Query(system="hgx-b200", stack="vllm", metric="tpot_ms", host_times="fitted")
    own = query_interval(100.0, replace(base, model="deepseek-r1"), table=table)
    assert own.extrapolating == () and own.hi is not None and own.hi < 106.0
    assert query_interval(100.0, replace(base, model="deepseek-v3"), table=table) == own
    new = query_interval(100.0, replace(base, model="kimi-k2"), table=table)
    assert new.extrapolating == ("model kimi-k2 has no rows on vllm on blackwell",)
    lo, hi = step_bounds(held, 0.8)
    assert lo == pytest.approx(1 / hi) and (new.lo, new.hi) == (pytest.approx(100 * lo), pytest.approx(100 * hi))
    # the held models run 30-40 % below the twin: the spread reaches them on either side
    assert new.lo is not None and new.lo < 65.0 and new.hi is not None and new.hi > 150.0
    assert query_interval(100.0, base, table=table).extrapolating == ()  # no model stated: nothing to step
    # with no cell of its own, the stratum is the cells one condition away (here R1's: a validated model)
    elsewhere = replace(base, stack="trtllm")
    assert query_interval(100.0, replace(elsewhere, model="deepseek-r1"), table=table).extrapolating == (
        "stack trtllm has no rows on blackwell",
    )
    assert query_interval(100.0, replace(elsewhere, model="kimi-k2"), table=table).extrapolating == (
        "stack trtllm has no rows on blackwell",
        "model kimi-k2 has no rows in the cells one condition away",
    )


def test_a_step_is_a_spread_of_the_stated_share() -> None:
    """A step's bounds are reciprocal and hold the coverage share of its rows (series-weighted) within them."""
    rows = [_row(f"s{i % 5}", math.exp(0.05 * i - 0.6)) for i in range(25)]
    lo, hi = step_bounds(rows, 0.8)
    assert lo * hi == pytest.approx(1.0)
    inside = sum(lo <= r["measured"] / r["predicted"] <= hi for r in rows) / len(rows)
    assert inside == pytest.approx(0.8, abs=1 / len(rows))


def test_a_step_is_never_narrower_than_the_cells_one_condition_away() -> None:
    """A stack new on a family whose stack hold-out error is narrow still gets at least the width of the
    family's validated cell (the answer one condition inside the domain)."""
    wide = _cell("gpt-oss-120b", 1.3, 1.0)
    narrow = [r | {"stack": "sglang"} for r in _cell("gpt-oss-120b", 1.0, 0.05, kind="stack")]
    table = index_residuals(wide + narrow, "tpot_ms")
    inside = query_interval(100.0, Query(system="hgx-b200", stack="vllm", metric="tpot_ms"), table=table)
    outside = query_interval(100.0, Query(system="hgx-b200", stack="trtllm", metric="tpot_ms"), table=table)
    assert outside.extrapolating == ("stack trtllm has no rows on blackwell",)
    assert inside.lo is not None and inside.hi is not None and outside.lo is not None and outside.hi is not None
    assert outside.hi / outside.lo == pytest.approx(inside.hi / inside.lo)  # widened to it, evenly in log
    assert outside.lo * outside.hi == pytest.approx(100.0**2)  # ... about the prediction


@settings(max_examples=100, deadline=None)
@given(
    system=st.sampled_from(["hgx-h100", "hgx-b200", "mi300x", "cloudmatrix384"]),
    stack=st.sampled_from(["vllm", "sglang", "atom"]),
    cls=st.sampled_from([None, "moe", "mla", "dsa"]),
    isl=st.one_of(st.none(), st.integers(800, 100_000)),
    conc=st.one_of(st.none(), st.integers(1, 10_000)),
    host_times=st.sampled_from([None, "fitted", "unfitted"]),
    shapes=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3, unique=True),
)
def test_a_shape_outside_its_kernels_range_never_narrows(
    system: str, stack: str, cls: str | None, isl: int | None, conc: int | None, host_times: str | None, shapes
) -> None:
    """Any query, inside the validated domain or not: an op priced beyond its kernel's measured shape never
    makes the interval narrower, widens it by at least the curves' out-of-range error, and names each op."""
    q = replace(_q(system, stack, cls, isl, conc, None), host_times=host_times)
    without = query_interval(100.0, q, table=INDEX)
    moved = query_interval(100.0, replace(q, shapes=tuple(f"kernel shape: {s}" for s in shapes)), table=INDEX)
    if without.lo is None or without.hi is None:
        assert moved.lo is None
        return
    assert moved.lo is not None and moved.hi is not None
    assert moved.hi / moved.lo >= without.hi / without.lo * (1 - 1e-12)
    assert moved.hi / moved.lo >= math.exp(2 * shape_spread(0.8)) * (1 - 1e-12)
    assert moved.extrapolating == without.extrapolating + tuple(f"kernel shape: {s}" for s in shapes)


def test_the_shape_step_is_the_curves_own_out_of_range_error() -> None:
    """Measured, not assumed: each GEMM curve's top point predicted from the points below it, held flat as the
    pricing holds a curve beyond its range; the 80 % quantile of |ln error| over the curves, each weighing
    the same. A few per cent of the op's share: the curves rise slowly at their top."""
    from cloudmatrix.catalog.kernels import curves

    errors = []
    for c in curves():
        if len(c.points) >= 3 and c.op != "attention":  # GEMM curves only: an attention op flags no shape step
            (m0, y0), (m1, y1) = c.points[-2], c.points[-1]
            assert m1 > m0
            errors.append({"series": len(errors), "measured": y1, "predicted": y0})
    assert len(errors) >= 20
    want = series_quantiles(errors, [0.8], score=lambda r: abs(math.log(r["measured"] / r["predicted"])))[0]
    assert shape_spread(0.8) == pytest.approx(want) and 0.01 < want < 0.5


def test_estimate_names_and_widens_for_its_shapes() -> None:
    """Kimi-K2's 64 query heads per die on CloudMatrix384 are beyond the MLA kernel's measured 128: the
    answer's intervals name the op and are wider than the same query without it."""
    res = runner.invoke(app, ["estimate", "--model", "kimi-k2", "--mtp", "0", "--batch-per-chip", "32", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["shape_extrapolating"] and all(s.startswith("kernel shape: ") for s in d["shape_extrapolating"])
    q = {"model": "kimi-k2", "weights": None, "isl": None, "steady": True}
    for path, iv in d["intervals"].items():
        assert iv["extrapolating"][-len(d["shape_extrapolating"]) :] == d["shape_extrapolating"]
        plain = query_interval(d[path], _query(d["system"], d["stack"], iv["metric"], q))
        assert plain.lo is not None and plain.hi is not None
        assert iv["hi"] / iv["lo"] > plain.hi / plain.lo
