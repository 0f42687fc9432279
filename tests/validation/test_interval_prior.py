"""The priors-alone host basis: recorded where no measured row of any engine informs a row's host times, kept as a
sub-pool of the unfitted residuals, and drawn on by a priors-alone answer, whose interval is never narrower than
its unfitted one."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.corpus import chip_family, load_corpora, load_rows
from cloudmatrix.catalog.host_basis import host_times_basis
from cloudmatrix.studies import holdout_refit as hr
from cloudmatrix.studies.holdout import residual_entry
from cloudmatrix.studies.holdout_score import entry_query
from cloudmatrix.studies.intervals import Query, index_residuals, query_interval, series_quantiles
from cloudmatrix.studies.stack_fit import FIT_CORPORA, fit_pairs
from cloudmatrix.studies.validate_run import RowOutcome

from .residual_rows import spread_rows


def _rows(prior: int = 12) -> list[dict]:
    """Fitted series rows about 1.0; rows priced on another engine's fit (family, stack hold-outs) about 1.02
    and narrow; ``prior`` rows priced on priors alone (the ISL hold-out) 20 % below the twin, on Hopper and
    Blackwell vLLM and SGLang."""
    rows = []
    for system in ("hgx-h100", "hgx-b200"):
        for stack in ("vllm", "sglang"):
            tag = f"{system}-{stack}"
            rows += spread_rows("series", system, stack, 1.0, 0.1, tag=f"s-{tag}")
            rows += spread_rows("family", system, stack, 1.02, 0.1, tag=f"f-{tag}")
            rows += spread_rows("stack", system, stack, 1.02, 0.1, tag=f"k-{tag}")
    held = spread_rows("isl", "hgx-h100", "vllm", 0.8, 0.2, tag="p-h100", n=max(prior, 2), host_times="prior")
    return rows + held[:prior]


TABLE = index_residuals(_rows(), "tpot_ms")


def _both(q: Query, table: object = TABLE) -> tuple:
    return tuple(query_interval(100.0, replace(q, host_times=b), table=table) for b in ("unfitted", "prior"))  # type: ignore[arg-type]


def test_prior_rows_are_a_sub_pool_of_the_unfitted_one() -> None:
    prior = {r["id"] for r in TABLE.prior.base}
    assert len(prior) == 12 and prior <= {r["id"] for r in TABLE.pools["unfitted"].base}
    assert not prior & {r["id"] for r in TABLE.pools["fitted"].base}
    ids = [r["id"] for r in TABLE.base]
    assert len(ids) == len(set(ids))  # the sub-pool is not counted twice in the table's base


def test_a_priors_alone_answer_takes_the_priors_alone_error_and_says_why() -> None:
    q = Query(system="hgx-h100", stack="vllm", metric="tpot_ms")
    unfitted, prior = _both(q)
    lo, hi = series_quantiles(list(TABLE.prior.base), [0.1, 0.9])
    assert prior.lo == pytest.approx(min(unfitted.lo, 100 * lo)) and prior.lo < unfitted.lo
    assert prior.hi == pytest.approx(max(unfitted.hi, 100 * hi))
    assert prior.bias_pct == pytest.approx(-20.0, abs=1.0)
    assert prior.extrapolating[0] == (
        "host times of vllm on hopper are its priors alone (no measured row of any engine fits them): "
        "the error of 12 rows from 3 deployments predicted so of vllm on hopper widens it"
    )
    assert unfitted.extrapolating[0] == "host times of vllm are not fitted on hopper"


def test_the_priors_alone_rows_fall_back_by_ecosystem_and_too_few_leave_the_unfitted_interval() -> None:
    q = Query(system="hgx-b200", stack="sglang", metric="tpot_ms")
    _, prior = _both(q)
    assert prior.extrapolating[0].endswith("predicted so on amd or nvidia chips widens it")
    # an NPU answer takes the GPUs' priors-alone rows where its own ecosystem has none: wider, not shifted
    unfitted, npu = _both(Query(system="cloudmatrix384", stack="mindie", metric="tpot_ms"))
    assert npu.extrapolating[0].endswith("predicted so on every chip widens it") and npu.lo < unfitted.lo
    assert npu.bias_pct == unfitted.bias_pct
    thin = index_residuals(_rows(prior=7), "tpot_ms")
    unfitted, prior = _both(Query(system="hgx-h100", stack="vllm", metric="tpot_ms"), thin)
    assert (prior.lo, prior.hi) == (unfitted.lo, unfitted.hi)
    assert prior.extrapolating[0].endswith("too few rows predicted so: the unfitted pool's interval stands")


@settings(max_examples=40, deadline=None)
@given(
    system=st.sampled_from(["hgx-h100", "hgx-b200", "mi300x", "cloudmatrix384"]),
    stack=st.sampled_from(["vllm", "sglang", "trtllm", "mindie"]),
    cls=st.sampled_from([None, "moe", "dense"]),
    isl=st.sampled_from([None, 1024, 8192, 100_000]),
    band=st.sampled_from([None, "conc 1-8", "conc 9-64", "conc 129+"]),
    prior=st.sampled_from([0, 7, 12]),
)
def test_a_priors_alone_interval_is_never_narrower_than_its_unfitted_one(
    system: str, stack: str, cls: str | None, isl: int | None, band: str | None, prior: int
) -> None:
    table = TABLE if prior == 12 else index_residuals(_rows(prior), "tpot_ms")
    q = Query(system=system, stack=stack, metric="tpot_ms", model_class=cls, isl=isl, band=band)
    unfitted, answer = _both(q, table)
    assert answer.unknown == unfitted.unknown
    if not unfitted.unknown:
        assert answer.lo <= unfitted.lo and answer.hi >= unfitted.hi  # type: ignore[operator]
    assert answer.extrapolating[0].startswith(f"host times of {stack} on {chip_family(system)} are its priors alone")


def test_the_basis_is_recorded_where_no_engine_keeps_a_fit_row() -> None:
    """Held out with every fit row (the 1K ISL band), a row's residual records ``prior``, and its nested query
    asks for it; held out with one engine's rows only, the other engines lend theirs: ``unfitted``."""
    fits = fit_pairs(load_corpora(list(FIT_CORPORA)))
    row = next(r for r in load_rows("inferencemax-public") if r.stack == "vllm" and "tpot_ms" in r.measured)
    outcome = RowOutcome(row_id=row.id, predicted={"tpot_ms": 10.0})
    every = hr.refit(fits, {r.id for (_, f), pairs in fits.items() if f == "default" for r, _ in pairs})
    vllm = hr.refit(fits, {r.id for r, _ in fits[("vllm", "default")]})
    entry = residual_entry(row, "isl", "ISL 1K", "tpot_ms", outcome, every.overrides)
    assert entry["host_times"] == "prior" and entry_query(entry).host_times == "prior"
    assert residual_entry(row, "stack", "vllm", "tpot_ms", outcome, vllm.overrides)["host_times"] == "unfitted"
    assert residual_entry(row, "series", row.series, "tpot_ms", outcome)["host_times"] == "fitted"


def test_a_stack_priced_on_its_own_assumption_is_priors_alone() -> None:
    """MindIE's host times are an assumption no row fits; vLLM-Ascend's borrow vLLM's Hopper fit."""
    assert host_times_basis("mindie", "ascend") == "prior"
    assert host_times_basis("vllm-ascend", "ascend") == "unfitted"
    assert host_times_basis("vllm", "hopper") == "fitted"
