"""A stack's own cost per op of its captured graph on one chip family (``op_launch_us`` of a family entry:
SGLang's HIP graphs on CDNA): every such entry adds ops x cost to a step on that family and nothing on any
other; it is fitted on fitted-role rows only and matches the catalog; a hold-out refits it without the held
rows, or, where none is left, drops it for the runtime's prior."""

import dataclasses

import pytest

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.host_basis import host_times_basis
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import StackCosts, load_stack, overridden_costs, stack_costs
from cloudmatrix.cost.pricing import graph_node_prior_us, graph_op_launch_us
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate
from cloudmatrix.studies.graph_fit import (
    FAMILY_FIT_CORPORA,
    family_op_fit_rows,
    family_op_launch_entries,
    fit_family_op_launch,
    refit_op_launch,
)
from cloudmatrix.studies.holdout_refit import refit

ENTRIES = family_op_launch_entries()
DECODE = Deployment(phase=Phase.DECODE, num_chips=8, tp=8, ep=1, moe_tp=8, batch_per_chip=2, input_len=1000,
                    output_len=1000, kv_len=1500, precision="fp8", activation_precision="fp8")  # fmt: skip


def _systems(family: str, same: bool) -> list[str]:
    out = []
    for s in system_ids():
        hw = load_hardware(s)
        if (hw.chip.family == family) == same and hw.system.num_chips * hw.chip.num_dies >= 8:
            out.append(s)
    return out


def _with_launch(system: str, launch_us: float):  # type: ignore[no-untyped-def]
    hw = load_hardware(system)
    chip = hw.chip.model_copy(update={"launch_us": Sourced(value=launch_us, source="test")})
    return hw.model_copy(update={"chip": chip})


def test_sglang_on_cdna_has_a_fitted_cost_per_op() -> None:
    assert ("sglang", "cdna") in ENTRIES
    # a device cost: the host times it is priced with stay the engine's pooled, unfitted ones
    assert host_times_basis("sglang", "cdna") == "unfitted"
    assert stack_costs("sglang", "cdna").step_overhead_us == stack_costs("sglang", "default").step_overhead_us  # type: ignore[union-attr]


@pytest.mark.parametrize(("stack", "family"), ENTRIES)
def test_step_pays_ops_times_cost_on_its_family_only(stack: str, family: str) -> None:
    costs = stack_costs(stack, family)
    assert costs is not None and costs.op_launch_us is not None and costs.op_launch_us.value > 0
    systems = _systems(family, True)
    assert systems
    for system in systems[:2]:
        hw = load_hardware(system)
        d = dataclasses.replace(DECODE, stack=stack)
        plain = estimate(hw, "deepseek-r1", d).step.step_s
        ops = (estimate(_with_launch(system, hw.chip.launch_us.value + 1), "deepseek-r1", d).step.step_s - plain) * 1e6
        without = StackCosts.model_validate(costs.model_dump() | {"op_launch_us": None, "tasks_per_op": None})
        with overridden_costs({(stack, family): without}):
            assert graph_op_launch_us(hw, stack) == 0.0
            bare = estimate(hw, "deepseek-r1", d).step.step_s
        assert (plain - bare) * 1e6 == pytest.approx(ops * costs.op_launch_us.value, rel=1e-6)
    for system in _systems(family, False):
        other = load_stack(stack).costs(load_hardware(system).chip.family)
        assert other.op_launch_us is None or other is costs


@pytest.mark.parametrize(("stack", "family"), ENTRIES)
def test_fit_uses_fitted_rows_only_and_matches_the_catalog(stack: str, family: str) -> None:
    fit = fit_family_op_launch(stack, family)
    costs = stack_costs(stack, family)
    assert costs is not None and costs.op_launch_us is not None
    assert costs.op_launch_us.source.startswith("CALIB")
    assert fit.op_launch_us == pytest.approx(costs.op_launch_us.value, rel=0.01)
    roles = {r.id: r.role for r in load_corpora(list(FAMILY_FIT_CORPORA))}
    assert len(fit.rows) >= 4 and all(roles[r.row_id] == "fitted" for r in fit.rows)
    assert all(abs(gap) < 15 for gap in fit.gaps_pct().values())


def test_holdout_refits_or_drops_the_cost_per_op() -> None:
    rows = family_op_fit_rows()[("sglang", "cdna")]
    assert refit_op_launch("sglang", "cdna", rows, set()) is None  # nothing held: the catalog value stands
    one_series = {r.id for r in rows if r.series == rows[0].series}
    part = refit({}, one_series, {("sglang", "cdna"): rows}).overrides[("sglang", "cdna")]
    assert part.op_launch_us is not None and part.op_launch_us.source.startswith("hold-out refit")
    assert part.op_launch_us.value != pytest.approx(stack_costs("sglang", "cdna").op_launch_us.value, rel=1e-9)  # type: ignore[union-attr]
    every = refit({}, {r.id for r in rows}, {("sglang", "cdna"): rows}).overrides[("sglang", "cdna")]
    assert every.op_launch_us is None and every.tasks_per_op is not None
    hw = load_hardware("mi300x")
    assert hw.chip.graph_task_us is not None
    with overridden_costs({("sglang", "cdna"): every}):  # the runtime's prior (tests/cost/test_hip_graph_prior.py)
        assert graph_op_launch_us(hw, "sglang") == graph_node_prior_us(hw, every.tasks_per_op) > 0
