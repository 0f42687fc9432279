"""`validate --holdout` refits SGLang-on-Ascend's graph cost per op (``graph.op_launch_us``, fitted on validation
rows by ``studies/graph_fit.py``) without the held group, like the stack host times: every kind's group that
holds any of its fit rows is priced with a fit on the rest (or, with none left, the runtime's prior: the stack's
tasks per op times the chip's cost per captured task, fitted on no row), and the pricing follows the in-memory
override, never a cached price made without it."""

import dataclasses

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.stacks import GRAPH_ENTRY, overridden_costs, overrides_key, stack_graph
from cloudmatrix.cost.pricing import graph_op_launch_us, graph_task_prior_us
from cloudmatrix.estimate import estimate
from cloudmatrix.studies import holdout as h
from cloudmatrix.studies import holdout_refit as hr
from cloudmatrix.studies.graph_fit import fit_graph_op_launch, graph_fit_rows
from tests.cost.test_graph_launch import DECODE

STACK = hr.GRAPH_STACK
KEY = (STACK, GRAPH_ENTRY)


@pytest.fixture(scope="module")
def fit_rows() -> list:
    return graph_fit_rows(STACK)


@pytest.mark.parametrize("kind", h.HOLDOUT_KINDS)
def test_every_group_that_holds_fit_rows_is_priced_without_them(kind: str, fit_rows: list) -> None:
    """For each kind, a group with fit rows gets the fit on the others (or the prior with none left), and a
    group without any keeps the catalog's cost (no override)."""
    groups: dict[str, set[str]] = {}
    for row, corpus in fit_rows:
        groups.setdefault(h.group_of(row, kind, corpus), set()).add(row.id)
    for held in [*groups.values(), {"a-row-of-another-stack"}]:
        refit = hr.with_graph_refit(hr.Refit(), held)
        if not held & {r.id for r, _ in fit_rows}:
            assert KEY not in refit.overrides and refit.notes == ()
            continue
        graph = refit.overrides[KEY]
        kept = len(fit_rows) - len(held)
        if kept:
            assert graph.op_launch_us.value == pytest.approx(fit_graph_op_launch(STACK, held).op_launch_us)
            assert refit.notes[-1].startswith(f"{STACK}/graph: op_launch_us refitted on {kept} of {len(fit_rows)}")
        else:
            assert graph.op_launch_us is None  # the prior: tasks per op x the chip's graph_task_us
            assert "no fit rows left" in refit.notes[-1] and "prior" in refit.notes[-1]


def test_ascend_held_out_whole_falls_back_and_a_partial_refit_moves(fit_rows: list) -> None:
    every = {r.id for r, _ in fit_rows}
    assert len(every) == 6
    whole = hr.with_graph_refit(hr.Refit(), every)
    assert whole.overrides[KEY].op_launch_us is None
    hw = load_hardware("atlas-800t-a3")
    with overridden_costs(whole.overrides):  # held out whole, the A3 rows are priced with the runtime's prior
        prior = graph_task_prior_us(hw, whole.overrides[KEY])
        assert prior > 0 and graph_op_launch_us(hw, STACK) == pytest.approx(prior)
    one = hr.with_graph_refit(hr.Refit(), {fit_rows[0][0].id})
    catalog = stack_graph(STACK)
    assert catalog is not None and catalog.op_launch_us is not None
    assert one.overrides[KEY].op_launch_us.value != catalog.op_launch_us.value


def test_pricing_follows_the_graph_override_and_restores() -> None:
    d = dataclasses.replace(DECODE, stack=STACK)  # the A3 decode row's layout, with MTP
    catalog = stack_graph(STACK)
    assert catalog is not None
    before = estimate("atlas-800t-a3", "deepseek-r1", d).step.step_s
    assert catalog.op_launch_us is not None
    zero = catalog.model_copy(update={"op_launch_us": catalog.op_launch_us.model_copy(update={"value": 0.0})})
    with overridden_costs({KEY: zero}):
        assert stack_graph(STACK) == zero and overrides_key() != ()
        during = estimate("atlas-800t-a3", "deepseek-r1", d).step.step_s
    assert during < before  # the per-op cost is gone while the override is in force ...
    assert estimate("atlas-800t-a3", "deepseek-r1", dataclasses.replace(d)).step.step_s == before  # ... and back
    assert stack_graph(STACK) == catalog and overrides_key() == ()


def test_a_held_row_is_run_again_under_the_graph_refit(fit_rows: list) -> None:
    """The memo and the stored in-sample baseline never stand in for a row whose graph cost the group refits."""
    row, corpus = fit_rows[0]
    every = {r.id for r, _ in fit_rows}
    refit = hr.with_graph_refit(hr.Refit(), every)
    assert h._priced_with(row, refit.overrides) != h._priced_with(row, {})
    result = h.holdout("stack", [(row, corpus)], jobs=1, memo={}, baseline={})
    assert KEY in result.refits[STACK].overrides
    assert any("graph: no fit rows left" in n for n in result.refits[STACK].notes)
