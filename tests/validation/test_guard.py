"""The regression guard (issue 11): the CI subset of the corpus, run as `validate` runs it. Its median errors
stay at or below the recorded figures (with an answered share no lower), and the stored residual table
still matches the model on these rows, so a cost-model change must regenerate it in the same commit."""

import pytest

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.reference import reference_ids
from cloudmatrix.catalog.validation import stored_residuals
from cloudmatrix.studies.guard import ci_subset, guard_corpora, guard_data, guard_figures
from cloudmatrix.studies.reproduce import reproduce
from cloudmatrix.studies.residual_table import reproduce_residuals
from cloudmatrix.studies.validate import Validation, run_in_pool


@pytest.fixture(scope="module")
def subset() -> Validation:
    rows = ci_subset(load_corpora(guard_corpora()))
    return Validation(rows=rows, outcomes=run_in_pool(2)(rows, None))


def test_subset_is_a_real_sample(subset: Validation) -> None:
    assert len(subset.rows) >= 80
    assert {r.role for r in subset.rows} == {"fitted", "predicted"}
    assert len({(r.system, r.stack) for r in subset.rows}) >= 8


def test_median_errors_do_not_regress(subset: Validation) -> None:
    recorded = guard_data()["recorded"]
    now = guard_figures(subset)
    for role, metrics in recorded.items():
        for metric, figures in metrics.items():
            got = now[role][metric]
            assert got["median_abs_error_pct"] <= figures["median_abs_error_pct"] + 1e-9, (role, metric, got)
            assert got["answered_share"] >= figures["answered_share"] - 1e-9, (role, metric, got)


def test_stored_residuals_match_the_model(subset: Validation) -> None:
    stored = {(r["id"], r["metric"]): r for r in stored_residuals()}
    for e in subset.entries():
        s = stored[(e["id"], e["metric"])]
        assert (s["status"], s["role"], s["measured"]) == (e["status"], e["role"], e["measured"]), e["id"]
        assert s["predicted"] == e["predicted"], (
            f"{e['id']} {e['metric']}: stored {s['predicted']}, model {e['predicted']}: "
            "run `cloudmatrix validate --write-residuals`"
        )


def test_stored_paper_residuals_match_reproduce() -> None:
    stored = {r["id"]: r for r in stored_residuals()}
    for r in reproduce_residuals([reproduce(i) for i in reference_ids()]):
        assert stored[r["id"]] == r
