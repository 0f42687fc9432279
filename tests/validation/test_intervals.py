"""Prediction intervals: series-weighted empirical quantiles of measured / predicted, the stratum fallback,
and calibration: leaving one series out at a time, the 80 % interval covers 70-90 % of its rows."""

import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import chip_family
from cloudmatrix.catalog.residuals import conc_band, stored_holdout_residuals, stored_residuals
from cloudmatrix.cli.app import app
from cloudmatrix.studies.interval_pools import paper_residuals
from cloudmatrix.studies.intervals import MIN_ROWS, Query, index_residuals, interval, query_interval, series_quantiles

KIND_SPREAD = {"series": 0.1, "family": 0.4, "stack": 0.3, "model": 0.25, "isl": 0.2, "band": 0.15}


def _row(series: str, ratio: float, system: str = "hgx-b200", metric: str = "tpot_ms", kind: str = "series") -> dict:
    return {
        "kind": kind,
        "id": f"{series}-{ratio}",
        "series": series,
        "system": system,
        "family": chip_family(system),
        "stack": "vllm",
        "model_class": "moe",
        "weights": "fp8",
        "isl": 1024,
        "isl_band": "ISL 1K",
        "concurrency": 4,
        "band": "conc 1-8",
        "metric": metric,
        "role": "predicted",
        "status": "ok",
        "measured": ratio * 10.0,
        "predicted": 10.0,
    }


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
}


def _q(system: str, stack: str, cls: str | None, isl: int | None, conc: int | None, weights: str | None) -> Query:
    return Query(
        system=system,
        stack=stack,
        metric="tpot_ms",
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
    move=st.sampled_from(sorted(MOVES)),
    data=st.data(),
)
def test_extrapolation_never_narrows(
    system: str, stack: str, cls: str | None, isl: int | None, conc: int | None, weights: str | None, move: str, data
) -> None:
    """Moving any one condition of a validated query outside the validated domain (a new chip family, a stack
    with no rows on the family, a new model class or weight format, a longer ISL, more clients) keeps the
    interval's bounds or widens them, and names a reason; or the answer becomes unknown."""
    fields = {"system": system, "stack": stack, "model_class": cls, "isl": isl, "concurrency": conc, "weights": weights}
    inside = query_interval(100.0, _q(*fields.values()), table=INDEX)
    assert inside.lo is not None and inside.hi is not None and inside.extrapolating == ()
    outside = query_interval(100.0, _q(*(fields | {move: data.draw(MOVES[move])}).values()), table=INDEX)
    if outside.lo is None or outside.hi is None:
        assert outside.note.startswith("unknown")
        return
    assert outside.lo <= inside.lo and outside.hi >= inside.hi
    assert outside.extrapolating  # each step is named


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
    predicted rows (reproduce), holds where they fall, and names that they are thin (a stack step widens it)."""
    res = runner.invoke(app, ["estimate", "--batch-per-chip", "96", "--mtp", "1", "--mtp-acceptance", "0.7", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    paper = [
        r for r in paper_residuals(stored_holdout_residuals(), stored_residuals()) if r["stack"] == "cloudmatrix-infer"
    ]
    for path, iv in d["intervals"].items():
        own = [r for r in paper if r["metric"] == iv["metric"]]
        assert len({r["series"] for r in own}) >= 3 and len(own) < MIN_ROWS  # its own evidence, thin
        assert iv["extrapolating"] == [
            f"stack cloudmatrix-infer has only {len(own)} rows from {len({r['series'] for r in own})} "
            "deployments on ascend"
        ]
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
