"""NVIDIA Hopper baselines (issue 4): every H800/H100 row within 10 %, median within 5 %, one set of Hopper
constants. Rows the model does not yet meet are strict xfails with their measured errors."""

import statistics

import pytest

from cloudmatrix.catalog.reference import load_reference
from cloudmatrix.studies.reproduce import reproduce

from .rows import row_params

REF = load_reference("hopper-baselines")
RESULT = reproduce("hopper-baselines")
BY_ID = {r.row.id: r for r in RESULT.results}

# Decode on Hopper comes out too fast (docs/model.md "Known gaps"); errors as measured. The SGLang prefill rows
# at 1K and 2K with in-distribution EPLB matched only inside the greedy schedule's bubble: in the
# two-batch-overlap order the twin's default-EPLB penalty (0.95 of perfect at 1K) is smaller than SGLang's
# (about 0.89 against its 4K perfect-EPLB row), the routing-imbalance gap of issue 23 item 6.
KNOWN_MISSES = {
    "sg1-h100-prefill-1k": "+12.7 %",
    "sg2-h100-prefill-2k": "+13.9 %",
    "sg4-h100-decode-b256": "+13.0 %",
}


@pytest.mark.parametrize("row_id", row_params([r.id for r in REF.rows], KNOWN_MISSES))
def test_row_within_tolerance(row_id: str) -> None:
    res = BY_ID[row_id]
    assert abs(res.error_pct) <= res.row.tolerance_pct, f"{row_id}: {res.predicted:.1f} ({res.error_pct:+.1f} %)"


@pytest.mark.xfail(strict=True, reason="median 9.3 %: the SGLang 1K/2K prefill and decode rows above")
def test_median_error_within_5_pct() -> None:
    errors = [abs(r.error_pct) for r in RESULT.results if r.row.role == "predicted"]
    assert statistics.median(errors) <= 5.0


def test_one_set_of_hopper_constants() -> None:
    from cloudmatrix.catalog.hardware import load_chip

    chips = [load_chip(c) for c in ("nvidia-h800", "nvidia-h100", "nvidia-h200")]
    assert len({c.efficiency.model_dump_json() for c in chips}) == 1
    assert len({c.launch_us.value for c in chips}) == 1
