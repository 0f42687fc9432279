"""Paper rows with their tolerances (issue 2): every throughput / TPOT / latency row within 10 %, the
median within 5 %, every dispatch/combine row within 15 %. Rows the model does not yet meet are marked
xfail(strict=True) with the measured error, so a fix shows up as an XPASS that fails the suite until the
mark is removed; the tolerances themselves are never loosened."""

import statistics

import pytest

from cloudmatrix.catalog.reference import load_reference
from cloudmatrix.studies.reproduce import reproduce

from .rows import row_params

REF = load_reference("cloudmatrix-infer")
RESULT = reproduce("cloudmatrix-infer")
BY_ID = {r.row.id: r for r in RESULT.results}

# Outside tolerance at the time of writing (see docs/model.md "Known gaps"); errors as measured.
KNOWN_MISSES = {
    "ems-ttft-reuse90": "0.17x vs 0.41x: the paper's gain saturates far below the compute saved",
    "ems-throughput-reuse90": "5.9x vs 2.28x: same cause as the TTFT row above",
}


@pytest.mark.parametrize("row_id", row_params([r.id for r in REF.rows], KNOWN_MISSES))
def test_row_within_tolerance(row_id: str) -> None:
    res = BY_ID[row_id]
    assert abs(res.error_pct) <= res.row.tolerance_pct, (
        f"{row_id}: published {res.row.published}, predicted {res.predicted:.2f} ({res.error_pct:+.1f} %)"
    )


def test_median_error_within_5_pct() -> None:
    """Issue 2's rows: absolute serving figures (not the microbenchmarks, not the ablation ratios)."""
    rows = [
        abs(r.error_pct)
        for r in RESULT.results
        if r.row.quantity not in ("dispatch_us", "combine_us") and r.row.baseline is None
    ]
    assert statistics.median(rows) <= 5.0


def test_rows_cover_the_issue() -> None:
    ids = set(BY_ID)
    assert {
        "prefill-perfect-eplb",
        "decode-b96-throughput",
        "decode-b96-tpot",
        "decode-layer-b96-mtp0",
        "decode-layer-b96-mtp1",
    } <= ids
    assert sum(i.startswith("slo") for i in ids) == 10
    assert sum(i.startswith(("dispatch-ep", "combine-ep")) for i in ids) == 12


def test_fitted_rows_are_labelled() -> None:
    fitted = {r.id for r in REF.rows if r.role == "fitted"}
    assert {"slo15-4k256-b8-tpot", "decode-layer-b96-mtp1"} <= fitted
    assert "prefill-perfect-eplb" not in fitted and "decode-b96-throughput" not in fitted


def test_ablation_rows_cover_issue_5() -> None:
    ids = set(BY_ID)
    assert {"prefill-default-eplb", "prefill-eplb-default-vs-perfect", "prefill-microbatch-gain-4k"} <= ids
    assert {f"decode-microbatch-gain-b{b}" for b in (64, 96, 128)} <= ids
    assert {"mtp-gain-max", "mtp-gain-min", "ems-ub-vs-vpc", "model-cold-start-obs", "model-switch-local-dram"} <= ids
    assert sum(i.startswith("ems-") for i in ids) == 5
    ratio_rows = [r for r in REF.rows if r.baseline is not None]
    assert all(r.unit == "x" and r.tolerance_pct == 15 for r in ratio_rows)
    fitted = {r.id for r in REF.rows if r.role == "fitted"}
    assert {"prefill-eplb-default-vs-perfect", "model-warm-start", "model-cold-start-ems"} <= fitted
    assert not {"prefill-default-eplb", "ems-throughput-reuse90", "model-cold-start-obs"} & fitted


def test_ratio_rows_divide_the_two_setups() -> None:
    """A ratio row is the quantity at its setup over the quantity at setup + baseline."""
    from cloudmatrix.deployment import deployment_from_setup
    from cloudmatrix.estimate import estimate

    row = next(r for r in REF.rows if r.id == "ems-ttft-reuse50")
    on = estimate(REF.system, REF.model, deployment_from_setup(row.setup, REF.defaults))
    off = estimate(REF.system, REF.model, deployment_from_setup({**row.setup, **row.baseline}, REF.defaults))
    assert BY_ID[row.id].predicted == pytest.approx(on.step.step_s / off.step.step_s, rel=1e-3)
