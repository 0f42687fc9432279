"""Prediction intervals: series-weighted empirical quantiles of measured / predicted, the stratum fallback,
and calibration: leaving one series out at a time, the 80 % interval covers 70-90 % of its rows."""

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.validation import stored_residuals
from cloudmatrix.cli.app import app
from cloudmatrix.studies.intervals import MIN_ROWS, interval, series_quantiles


def _row(series: str, ratio: float, system: str = "hgx-b200", metric: str = "tpot_ms", role: str = "predicted") -> dict:
    return {
        "series": series,
        "system": system,
        "family": "blackwell",
        "stack": "vllm",
        "metric": metric,
        "role": role,
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
    assert iv.stratum == "hgx-b200 x vllm x tpot_ms"


def test_fallback_needs_rows_and_series() -> None:
    few = [_row(f"s{i % 4}", 1.0) for i in range(MIN_ROWS - 1)]
    family = [dict(r, system="gb200-nvl72") for r in [_row(f"t{i % 3}", 1.5) for i in range(MIN_ROWS)]]
    iv = interval(10.0, "hgx-b200", "vllm", "tpot_ms", residuals=few + family)
    assert iv.stratum == "blackwell x vllm x tpot_ms" and iv.rows == 2 * MIN_ROWS - 1
    one_series = [_row("only", 1.0) for _ in range(20)]
    iv = interval(10.0, "hgx-b200", "vllm", "tpot_ms", residuals=one_series)
    assert iv.lo is None and "no validation data" in iv.note and iv.to_dict()["stratum"] is None


def test_fitted_and_refused_rows_never_count() -> None:
    rows = [_row(f"s{i % 4}", 1.0, role="fitted") for i in range(12)] + [dict(_row("x", 1.0), status="refused")] * 9
    assert interval(10.0, "hgx-b200", "vllm", "tpot_ms", residuals=rows).lo is None


def test_no_stack_no_interval() -> None:
    iv = interval(10.0, "atlas950-superpod", None, "tpot_ms", residuals=[_row("a", 1.0)] * 10)
    assert iv.lo is None and "no serving stack" in iv.note


def test_leave_one_series_out_coverage() -> None:
    """Calibration on the stored table: each predicted series' rows against intervals built without it."""
    table = list(stored_residuals())
    assert table, "the residual table is missing: run `cloudmatrix validate --write-residuals`"
    usable = [r for r in table if r["role"] == "predicted" and r["status"] == "ok"]
    hits = Counter()
    for series in sorted({r["series"] for r in usable}):
        others = [r for r in table if r["series"] != series]
        for r in (x for x in usable if x["series"] == series):
            iv = interval(r["predicted"], r["system"], r["stack"], r["metric"], residuals=others)
            if iv.lo is not None:
                hits[iv.lo <= r["measured"] <= iv.hi] += 1
    covered = hits[True] / (hits[True] + hits[False])
    assert hits[True] + hits[False] >= 200
    assert 0.70 <= covered <= 0.90, f"80 % intervals cover {covered:.1%} of left-out rows"


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


def test_cloudmatrix_says_no_validation_data() -> None:
    """The paper's 7 predicted throughput rows fall short of 8: no interval is invented."""
    res = runner.invoke(app, ["estimate", "--batch-per-chip", "96", "--mtp", "1", "--mtp-acceptance", "0.7"])
    assert res.exit_code == 0, res.output
    assert "no validation data" in res.stdout
