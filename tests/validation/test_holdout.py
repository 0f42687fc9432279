"""`validate --holdout`: refits without the held group, the in-memory override of the stack constants, the
prediction of a small subset under it, nested scoring (a group never sees its own residuals) and the
statistics of a hold-out run."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.corpus import load_corpora, load_rows
from cloudmatrix.catalog.host_basis import host_times_basis
from cloudmatrix.catalog.residuals import stored_holdout_residuals
from cloudmatrix.catalog.stacks import load_stack, overridden_costs, stack_costs
from cloudmatrix.cli.app import app
from cloudmatrix.studies import holdout as h
from cloudmatrix.studies import holdout_refit as hr
from cloudmatrix.studies.graph_fit import family_op_fit_rows, graph_fit_rows
from cloudmatrix.studies.holdout_refit import GRAPH_STACK
from cloudmatrix.studies.holdout_score import (
    LATEST_CORPORA,
    entry_query,
    nested,
    score_prospective,
    score_stored,
    summary,
    unpublished,
    wilson,
)
from cloudmatrix.studies.intervals import Query, index_residuals, query_interval
from cloudmatrix.studies.stack_fit import FIT_CORPORA, fit_group, fit_rows, fittable
from cloudmatrix.studies.validate_run import run_row

from .residual_rows import residual

H100_SERIES = "imx-h100-vllm-gpt-oss-120b-fp4-1024x1024-tp8-ep1"
C4 = f"{H100_SERIES}-c4"


@pytest.fixture(scope="module")
def fits() -> dict:
    return {k: fittable(v) for k, v in fit_rows(load_corpora(list(FIT_CORPORA))).items()}


def test_refit_leaves_out_the_group(fits: dict) -> None:
    held = {f"{H100_SERIES}-c4", f"{H100_SERIES}-c8"}
    r = hr.refit(fits, held)
    # the family entry and the engine's pooled default were fitted on these rows; no other entry was
    assert list(r.overrides) == [("vllm", "default"), ("vllm", "hopper")]
    costs = r.overrides[("vllm", "hopper")]
    kept = fit_group([(x, b) for x, b in fits[("vllm", "hopper")] if x.id not in held])
    assert costs.step_overhead_us.value == pytest.approx(2106.776, abs=1e-3) == kept.step_overhead_us
    assert costs.request_overhead_ms.value == pytest.approx(10.523, abs=1e-3) == kept.request_overhead_ms
    pooled = fit_group([(x, b) for x, b in fits[("vllm", "default")] if x.id not in held])
    assert r.overrides[("vllm", "default")].step_overhead_us.value == pooled.step_overhead_us
    assert r.notes == (
        "vllm/default: refitted on 17 of 19 fit rows (1582 µs/step, 13.5 ms/request)",
        "vllm/hopper: refitted on 7 of 9 fit rows (2107 µs/step, 10.5 ms/request)",
    )
    # with nothing held out the fit is the catalog's
    assert fit_group(fits[("vllm", "hopper")]).step_overhead_us == pytest.approx(1964.46, abs=0.01)
    assert hr.refit(fits, set()).overrides == {}


def test_no_rows_left_falls_back_and_says_so(fits: dict) -> None:
    """TensorRT-LLM's only fit rows are Blackwell's: held out, its pooled default has nothing left either,
    so each of its entries takes its own prior plus the other engines' excess per op over theirs
    (test_host_time_law.py)."""
    r = hr.refit(fits, {x.id for x, _ in fits[("trtllm", "blackwell")]})
    for key in (("trtllm", "default"), ("trtllm", "blackwell")):
        costs = r.overrides[key]
        assert costs.step_overhead_us.value == 0.0 and costs.step_kernels is not None and costs.step_kernels.value > 0
    assert r.overrides[("trtllm", "blackwell")].kernels == load_stack("trtllm").families["blackwell"].kernels
    assert r.notes[0].startswith("trtllm/default: no fit rows left; falls back to the engine's prior, 0.35 kernels")
    assert r.notes[1].startswith("trtllm/blackwell: no fit rows left; falls back to the engine's prior, 0.35 kernels")


def test_no_held_row_ever_prices_its_own_group(fits: dict) -> None:
    """For every stack held out whole, no entry it is priced with keeps a constant fitted on its rows."""
    for stack in sorted({s for s, _ in fits}):
        held = {x.id for (s, _), pairs in fits.items() if s == stack for x, _ in pairs}
        r = hr.refit(fits, held)
        for s, fam in fits:
            if s == stack and hr._fitted_entry(s, fam) is not None:
                assert (s, fam) in r.overrides
                source = r.overrides[(s, fam)].step_overhead_us.source
                assert source.startswith("borrowed: ") or fam != "default"
                # ... and the intervals count it as priced without the stack's own fit
                with overridden_costs(r.overrides):
                    assert host_times_basis(s, fam) == "unfitted", (s, fam, source)


def test_override_is_in_memory_and_followed_by_like() -> None:
    base = stack_costs("vllm", "hopper")
    assert base is not None
    new = base.model_copy(update={"step_overhead_us": base.step_overhead_us.model_copy(update={"value": 1.0})})
    with overridden_costs({("vllm", "hopper"): new}):
        assert stack_costs("vllm", "hopper") == new
        assert stack_costs("atom", "cdna") == new  # ATOM's default is like: vllm/hopper
        assert stack_costs("vllm", "blackwell") != new
    assert stack_costs("vllm", "hopper") == base == stack_costs("atom", "cdna")


def test_holdout_predicts_with_the_refit(fits: dict) -> None:
    row = next(r for r in load_rows("inferencemax-public") if r.id == C4)
    result = h.holdout("series", [(row, "inferencemax-public")], jobs=1)
    overrides = result.refits[row.series].overrides
    with overridden_costs(overrides):
        expected = run_row(row).predicted
    plain = run_row(row).predicted
    got = {e["metric"]: e["predicted"] for e in result.entries}
    assert got == {m: round(v, 4) for m, v in expected.items()}
    refit_step = overrides[("vllm", "hopper")].step_overhead_us.value
    catalog_step = load_stack("vllm").costs("hopper").step_overhead_us.value
    assert refit_step != catalog_step  # the refit moves TPOT the way it moves the step overhead
    assert (got["tpot_ms"] > round(plain["tpot_ms"], 4)) == (refit_step > catalog_step)
    assert {e["kind"] for e in result.entries} == {"series"} and {e["group"] for e in result.entries} == {row.series}
    # a second kind that prices the row with the same constants reuses the run
    memo = {(row.id, h._priced_with(row, overrides)): run_row(row)}
    again = h.holdout("series", [(row, "inferencemax-public")], jobs=1, memo=memo)
    assert {e["predicted"] for e in again.entries} == {round(v, 4) for v in plain.values()}


def test_group_keys() -> None:
    row = next(r for r in load_rows("inferencemax-public") if r.id == C4)
    keys = {k: h.group_of(row, k, "inferencemax-public") for k in h.HOLDOUT_KINDS}
    assert keys == {
        "series": row.series,
        "system": "hgx-h100",
        "family": "hopper",
        "stack": "vllm",
        "model": "gpt-oss-120b",
        "isl": "ISL 1K",
        "band": "conc 1-8",
        "corpus": "inferencemax-public",
    }


HOPPER = "hopper"  # the first group: every row of the family, the papers' Hopper rows held out with it


def _group(g: int) -> str:
    return HOPPER if g == 0 else f"g{g}"


def _entry(group: str, i: int, ratio: float, kind: str = "family") -> dict:
    system = "hgx-h100" if group == HOPPER else "hgx-b200"
    return residual(system, ratio, kind=kind, group=group, id=f"{group}-{i}", series=f"{group}-s{i % 3}")


def test_nested_intervals_never_see_their_group() -> None:
    """Group g's interval is exactly the one built from the others' residuals: g's own errors (here far
    off) do not move it."""
    entries = [_entry(_group(g), i, 1.0 + 0.05 * g + 0.01 * i) for g in range(3) for i in range(9)]
    entries += [_entry("g3", i, 3.0) for i in range(9)]
    base = [dict(e, kind="series") for e in entries]
    scored = nested(entries, base)
    for group in (HOPPER, "g3"):
        others = [r for r in base if r["group"] != group] + [e for e in entries if e["group"] != group]
        e = next(x for x in scored if x["group"] == group)
        iv = query_interval(10.0, entry_query(e), residuals=others)
        assert (e["interval_lo"], e["interval_hi"]) == (
            (None, None) if iv.lo is None else (round(iv.lo, 4), round(iv.hi, 4))
        )
    g3 = [x for x in scored if x["group"] == "g3"]
    assert all(x["interval_hi"] is not None and x["interval_hi"] < 30.0 for x in g3)  # so it misses them all
    s = summary(scored)["metrics"]["tpot_ms"]
    g3_cell = next(c for c in summary(scored)["groups"] if c["group"] == "g3")
    assert g3_cell["coverage"] == 0.0 and g3_cell["median_abs_error_pct"] == pytest.approx(66.67, abs=0.01)
    # the only group on hopper: a new family, whose stack has rows on Blackwell, takes the family step alone
    # (its hold-out held the stack's cell on the family out with it), so no stack hold-out error is needed
    g0 = next(c for c in summary(scored)["groups"] if c["group"] == HOPPER)
    assert g0["unknown_share"] == 0.0 and s["rows"] == 36 and s["unknown_share"] == 0.0
    # ... and a new family with a stack new everywhere, with no stack hold-out error given, is unknown
    atom = nested([e | {"stack": "atom"} if e["group"] == HOPPER else e for e in entries], base)
    assert all(x["interval_lo"] is None for x in atom if x["group"] == HOPPER)
    # a new family's formats are new with it: its hold-out error holds that step, so no weights step is added
    assert next(x for x in scored if x["group"] == HOPPER)["extrapolating"] == ["chip family hopper has no rows"]


def test_summary_statistics_exact() -> None:
    rows = [
        _entry("a", 0, 1.0) | {"interval_lo": 9.0, "interval_hi": 11.0},  # inside, width 20 %
        _entry("a", 1, 1.5) | {"interval_lo": 9.0, "interval_hi": 13.0},  # outside, width 40 %
        _entry("a", 3, 1.0) | {"interval_lo": None, "interval_hi": None},  # unknown (series s0 again)
        _entry("b", 2, 0.8) | {"interval_lo": 7.0, "interval_hi": 12.0},  # inside, width 50 %
    ]
    c = summary(rows)["metrics"]["tpot_ms"]
    assert c["coverage"] == pytest.approx(2 / 3, abs=1e-4)
    # its Wilson interval at one standard error over 3 rows: centre 5/8, half-width 3/4 x sqrt(2/27 + 1/36)
    half = 0.75 * (2 / 27 + 1 / 36) ** 0.5
    assert (c["coverage_lo"], c["coverage_hi"]) == (
        pytest.approx(0.625 - half, abs=1e-4),
        pytest.approx(0.625 + half, abs=1e-4),
    )
    assert c["unknown_share"] == 0.25 and c["median_width_pct"] == 40.0
    assert c["median_abs_error_pct"] == pytest.approx(12.5)  # errors 0, -33.3, 0, +25: |.| median 12.5
    assert c["coverage_series"] == pytest.approx(2 / 3, abs=1e-4)  # three series, one row each of the known


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 2000), data=st.data())
def test_a_share_has_an_uncertainty_even_at_none_or_all(n: int, data) -> None:
    """The Wilson score interval: never empty (a share of 0 or 1 over finitely many draws is not certain, as
    the Wald standard error said), inside [0, 1], holding the share, narrower with more draws."""
    k = data.draw(st.integers(0, n))
    lo, hi = wilson(k / n, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0 and hi - lo > 0.0
    lo4, hi4 = wilson(k / n, 4 * n)
    assert hi4 - lo4 < hi - lo


def test_wilson_as_published() -> None:
    """0 of 10 at 95 %: [0, 0.2775] (Wilson 1927; Newcombe 1998, Table I); 40 of 40 at one standard error."""
    assert wilson(0.0, 10, z=1.959964) == (0.0, pytest.approx(0.27753, abs=1e-5))
    assert wilson(1.0, 40) == (pytest.approx(40 / 41, abs=1e-9), 1.0)
    c = summary([_entry("a", i, 1.0) | {"interval_lo": 9.0, "interval_hi": 11.0} for i in range(6)])
    c = c["metrics"]["tpot_ms"]
    assert c["coverage"] == 1.0 and c["coverage_lo"] == round(6 / 7, 4) and c["coverage_hi"] == 1.0
    assert c["coverage_series_lo"] == 0.75  # three series: 3 / (3 + 1)


def test_validation_entries_carry_intervals() -> None:
    table = [_entry(_group(g), i, 1.0 + 0.02 * i, kind="series") for g in range(2) for i in range(9)]
    t = index_residuals(table, "tpot_ms")
    iv = query_interval(10.0, Query(system="hgx-b200", stack="vllm", metric="tpot_ms", band="conc 1-8"), table=t)
    assert iv.lo is not None and iv.lo < iv.hi


runner = CliRunner()


def test_cli_holdout_on_a_few_series_is_json() -> None:
    res = runner.invoke(app, ["validate", "published", "--stack", "atom", "--holdout", "stack", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["holdout"] == "stack" and d["groups"] == {"atom": []}  # no ATOM row is a fit row
    assert {e["group"] for e in d["rows"]} == {"atom"}
    assert all({"interval_lo", "interval_hi", "extrapolating"} <= set(e) for e in d["rows"])
    assert set(d["summary"]["metrics"]) == {"output_tok_s_per_chip", "tpot_ms"}


def test_cli_holdout_kind_is_checked() -> None:
    res = runner.invoke(app, ["validate", "--holdout", "planet"])
    assert res.exit_code == 2 and "--holdout: 'planet' is not one of" in res.output


STORED_KINDS = ("series", "family", "stack", "model", "isl", "band")
# The stored out-of-group figures as docs/validation.md §9 quotes them, per kind and metric: (coverage of the
# 80 % interval, unknown share, median |error| %, median width %). Regenerating residuals-holdout.json
# changes them: update them in the same commit, and never loosen them without a written reason.
RECORDED = {
    "family": {
        "output_tok_s_per_chip": (0.784, 0.0, 8.29, 34.88),
        "tpot_ms": (0.76, 0.0, 9.65, 34.5),
        "ttft_ms": (0.7964, 0.0, 12.64, 61.78),
    },
    "stack": {
        "output_tok_s_per_chip": (0.9338, 0.0, 7.2, 67.65),
        "tpot_ms": (0.7967, 0.0, 7.44, 35.95),
        "ttft_ms": (0.8929, 0.0, 14.59, 301.52),
    },
    "model": {
        "output_tok_s_per_chip": (0.9826, 0.0, 7.28, 73.88),
        "tpot_ms": (0.9433, 0.0, 7.86, 71.01),
        "ttft_ms": (0.9429, 0.0, 14.81, 78.75),
    },
    "isl": {
        "output_tok_s_per_chip": (0.8885, 0.0, 12.05, 39.11),
        "tpot_ms": (0.89, 0.0, 11.27, 48.0),
        "ttft_ms": (0.8571, 0.0, 14.21, 73.35),
    },
    "series": {
        "output_tok_s_per_chip": (0.7282, 0.0, 5.79, 26.23),
        "tpot_ms": (0.7533, 0.0, 6.13, 26.36),
        "ttft_ms": (0.7393, 0.0, 9.82, 37.97),
    },
    "band": {
        "output_tok_s_per_chip": (0.8258, 0.0, 8.55, 40.38),
        "tpot_ms": (0.8567, 0.0, 8.98, 41.73),
        "ttft_ms": (0.7964, 0.0, 12.7, 47.9),
    },
}


def test_stored_holdout_table_covers_every_shipped_row() -> None:
    table = stored_holdout_residuals()
    assert table, "run `cloudmatrix validate --holdout series,family,stack,isl,band,model --write-residuals`"
    shipped = {(r.id, m) for r in load_corpora() for m in r.measured}
    for kind in STORED_KINDS:
        assert {(r["id"], r["metric"]) for r in table if r["kind"] == kind} == shipped, kind


@pytest.fixture(scope="module")
def stored_scores() -> dict:
    table = stored_holdout_residuals()
    return {kind: score_stored(kind, table)["metrics"] for kind in RECORDED}


def test_stored_out_of_group_figures_as_recorded(stored_scores: dict) -> None:
    for kind, metrics in RECORDED.items():
        for metric, (coverage, unknown, median, width) in metrics.items():
            c = stored_scores[kind][metric]
            assert (c["coverage"], c["unknown_share"], c["median_abs_error_pct"], c["median_width_pct"]) == (
                coverage,
                unknown,
                median,
                width,
            ), (kind, metric)


# Issue 22's acceptance: out of family, stack, model and ISL, the 80 % interval's coverage of output tok/s per
# chip, TPOT and TTFT lies in 75-90 % within its uncertainty: the series-weighted share's Wilson interval (one
# standard error; rows of a series are correlated, so series are the draws) meets the band. The (kind, metric)
# cells that fall short today, each with why; a cell that starts meeting the band fails here until removed.
ACCEPTANCE_KINDS = ("family", "stack", "model", "isl")
BAND = (0.75, 0.90)
KNOWN_SHORT: dict[tuple[str, str], str] = {}


def test_acceptance_coverage_within_its_uncertainty(stored_scores: dict) -> None:
    for kind in ACCEPTANCE_KINDS:
        for metric in ("output_tok_s_per_chip", "tpot_ms", "ttft_ms"):
            c = stored_scores[kind][metric]
            meets = c["coverage_series_lo"] <= BAND[1] and c["coverage_series_hi"] >= BAND[0]
            assert c["unknown_share"] <= 0.2, (kind, metric)
            assert meets != ((kind, metric) in KNOWN_SHORT), (kind, metric, c["coverage_series"])


def test_a_group_is_held_out_whole_when_only_part_is_scored(fits: dict) -> None:
    """Scoring one H100 row under `--holdout family` refits without every hopper fit row, not only its own."""
    row = next(r for r in load_rows("inferencemax-public") if r.id == C4)
    refits = h.holdout("family", [(row, "inferencemax-public")], jobs=1, memo={}, baseline={}).refits
    assert set(refits) == {"hopper"}
    assert {k for k in refits["hopper"].overrides} == {
        ("sglang", "default"),
        ("sglang", "hopper"),
        ("vllm", "default"),
        ("vllm", "hopper"),
    }
    notes = refits["hopper"].notes
    assert all("no fit rows left" in n for n in notes if "/hopper" in n)  # Hopper falls back to the pool ...
    assert all("refitted on" in n for n in notes if "/default" in n)  # ... refitted on the other families


# The pseudo-prospective check (docs/validation.md §9): the corpora added last, answered as before they were
# published and scored against intervals built without any of their rows. Per metric: (coverage, unknown share,
# median |error| %, median width %). Not a target the intervals were tuned to: recorded so that a change shows.
PROSPECTIVE = {
    "output_tok_s_per_chip": (0.8082, 0.0, 8.89, 38.37),
    "tpot_ms": (0.8125, 0.0, 9.58, 41.5),
    "ttft_ms": (0.589, 0.0, 12.77, 31.83),
}


def test_pseudo_prospective_figures_as_recorded() -> None:
    got = score_prospective(stored_holdout_residuals())
    assert {g["group"] for g in got["groups"]} == set(LATEST_CORPORA)
    for metric, (coverage, unknown, median, width) in PROSPECTIVE.items():
        c = got["metrics"][metric]
        assert (c["coverage"], c["unknown_share"], c["median_abs_error_pct"], c["median_width_pct"]) == (
            coverage,
            unknown,
            median,
            width,
        ), metric


def test_the_prospective_rows_never_inform_their_intervals() -> None:
    """Their intervals are those of a table with every row of those corpora removed: changing what they
    measured changes nothing but their coverage."""
    table = stored_holdout_residuals()
    latest = {r.id for name in LATEST_CORPORA for r in load_rows(name)}
    moved = [dict(r, measured=r["measured"] * 3) if r["id"] in latest else r for r in table]
    a, b = score_prospective(table), score_prospective(moved)
    for metric, c in a["metrics"].items():
        d = b["metrics"][metric]
        assert (c["median_width_pct"], c["unknown_share"], c["rows"]) == (
            d["median_width_pct"],
            d["unknown_share"],
            d["rows"],
        )
        assert c["median_abs_error_pct"] != d["median_abs_error_pct"]


def test_the_prospective_answers_use_no_constant_fitted_on_their_corpora() -> None:
    """Every row of the corpora is answered as before they were published: a cell priced with a constant fitted
    on any of their rows (SGLang's cost per op on CDNA, SGLang-on-Ascend's graph cost) takes the refit without
    them, not the series hold-out's prediction, which keeps the corpus's other series; every other cell keeps
    the series hold-out's prediction (no constant of it was fitted on these rows)."""
    latest = {r.id for name in LATEST_CORPORA for r in load_rows(name)}
    fit_ids = {r.id for rows in family_op_fit_rows().values() for r in rows} | {
        r.id for r, _ in graph_fit_rows(GRAPH_STACK)
    }
    series = {(r["id"], r["metric"]): r for r in stored_holdout_residuals() if r["kind"] == "series"}
    fitted_cells = {(series[k]["family"], series[k]["stack"]) for k in series if k[0] in fit_ids & latest}
    assert fitted_cells == {("cdna", "sglang"), ("ascend", "sglang-ascend")}
    answers = unpublished(LATEST_CORPORA)
    assert set(answers) == {k for k in series if k[0] in latest}
    for key, a in answers.items():
        s = series[key]
        if s["status"] != "ok" or a["status"] != "ok":
            continue
        assert (a["predicted"] != s["predicted"]) == ((s["family"], s["stack"]) in fitted_cells), key
