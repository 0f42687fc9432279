"""The runtime's prior for a family's own cost per op of a captured HIP graph (SGLang on CDNA): every family entry
that states its kernels per op beyond the first (``tasks_per_op``) is priced, wherever its fitted
``op_launch_us`` may not be used (a hold-out of its rows), at exactly that count times the chip's cost per
graph node (``graph_task_us``); in sample the fit prices it, and a chip stating no cost per node adds nothing."""

import dataclasses

import pytest

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.kernels import microbench
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import StackCosts, load_stack, overridden_costs, stack_costs, stack_ids
from cloudmatrix.cost.pricing import graph_node_prior_us, graph_op_launch_us, host_op_us
from cloudmatrix.estimate import estimate
from cloudmatrix.studies.graph_fit import family_op_fit_rows, fit_family_op_launch, refit_op_launch
from tests.cost.test_family_op_launch import DECODE

# every (stack, family) entry of its own that states a count for the prior
PRIOR_ENTRIES = [
    (s, f) for s in stack_ids() for f in load_stack(s).families if getattr(stack_costs(s, f), "tasks_per_op", None)
]
# GraphBench (AMD, ROCm 7.2): a null kernel in a serial chain replayed in one HIP graph costs 1.55 us per node,
# the floor of a node with work; ROCm/rocm-systems 10834: up to 10 us per node of tiny kernels on RDNA3
NODE_FLOOR_US, NODE_CEILING_US = 1.55, 10.0


def _chips(family: str) -> list[str]:
    return [s for s in system_ids() if load_hardware(s).chip.family == family]


def _without_fit(stack: str, family: str) -> StackCosts:
    costs = stack_costs(stack, family)
    assert costs is not None
    return costs.model_copy(update={"op_launch_us": None})


def test_sglang_on_cdna_states_its_count_and_every_cdna_chip_its_cost_per_node() -> None:
    assert ("sglang", "cdna") in PRIOR_ENTRIES
    for system in _chips("cdna"):
        task = load_hardware(system).chip.graph_task_us
        assert task is not None and task.source and task.assumed  # a prior, and said so
        assert NODE_FLOOR_US < task.value < NODE_CEILING_US


@pytest.mark.parametrize(("stack", "family"), PRIOR_ENTRIES)
def test_with_the_fit_withdrawn_the_cost_per_op_is_exactly_the_prior(stack: str, family: str) -> None:
    costs = stack_costs(stack, family)
    assert costs is not None and costs.tasks_per_op is not None and costs.tasks_per_op.source
    for system in _chips(family):
        hw = load_hardware(system)
        task = hw.chip.graph_task_us
        assert task is not None
        in_sample = graph_op_launch_us(hw, stack)
        assert costs.op_launch_us is not None and in_sample == costs.op_launch_us.value  # the fit prices it
        with overridden_costs({(stack, family): _without_fit(stack, family)}):
            floor = hw.chip.kernel_floor_us.value if hw.chip.kernel_floor_us is not None else 0.0
            per_node = task.value + floor  # a node's launch and clean-up, and its tiny kernel's own run time
            assert graph_op_launch_us(hw, stack) == pytest.approx(costs.tasks_per_op.value * per_node)  # the prior
            assert graph_op_launch_us(hw, stack) == graph_node_prior_us(hw, costs.tasks_per_op) > 0


def test_a_chip_without_a_cost_per_node_adds_nothing_for_the_prior() -> None:
    costs = _without_fit("sglang", "cdna")
    chip = load_hardware("mi300x").chip.model_copy(update={"graph_task_us": None})  # a kernel floor alone: no node
    hw = load_hardware("mi300x").model_copy(update={"chip": chip})
    with overridden_costs({("sglang", "cdna"): costs}):
        assert graph_op_launch_us(hw, "sglang") == 0.0


def test_the_prior_prices_the_step_between_no_cost_and_the_fit() -> None:
    """The step grows by the ops times the prior: above a step with no cost per op, below the fitted one (the
    MI300X rows ask for more than the runtime's cost per node explains)."""
    d = dataclasses.replace(DECODE, stack="sglang")
    hw = load_hardware("mi300x")
    fitted = estimate(hw, "deepseek-r1", d).step.step_s
    chip = hw.chip.model_copy(update={"launch_us": Sourced(value=hw.chip.launch_us.value + 1.0, source="test")})
    ops = (estimate(hw.model_copy(update={"chip": chip}), "deepseek-r1", d).step.step_s - fitted) * 1e6
    bare = _without_fit("sglang", "cdna").model_copy(update={"tasks_per_op": None})
    with overridden_costs({("sglang", "cdna"): bare}):
        none = estimate(hw, "deepseek-r1", d).step.step_s
    with overridden_costs({("sglang", "cdna"): _without_fit("sglang", "cdna")}):
        prior = estimate(hw, "deepseek-r1", d).step.step_s
    assert none < prior < fitted
    costs = stack_costs("sglang", "cdna")
    assert costs is not None and costs.tasks_per_op is not None
    assert (prior - none) * 1e6 == pytest.approx(ops * graph_node_prior_us(hw, costs.tasks_per_op), rel=1e-6)


def test_a_holdout_without_the_fit_rows_falls_back_to_the_prior_and_says_so() -> None:
    rows = family_op_fit_rows()[("sglang", "cdna")]
    costs, note = refit_op_launch("sglang", "cdna", rows, {r.id for r in rows}) or (None, "")
    assert costs is not None and costs.op_launch_us is None and "falls back to the prior" in note
    hw = load_hardware("mi325x")  # the predicted chip, and the engine over SGLang's scheduler on it
    with overridden_costs({("sglang", "cdna"): costs}):
        expected = graph_node_prior_us(hw, costs.tasks_per_op)  # type: ignore[arg-type]
        assert graph_op_launch_us(hw, "sglang") == expected == graph_op_launch_us(hw, "mori-sglang")


def test_the_rows_fit_stays_within_a_factor_four_of_the_runtime_prior() -> None:
    """The MI300X rows do not contradict the runtime: their fit is about 1.8 times the prior (the cost per node
    and a tiny kernel's own run time), the rest being what the prior leaves out."""
    costs = stack_costs("sglang", "cdna")
    assert costs is not None and costs.tasks_per_op is not None
    ratio = fit_family_op_launch("sglang", "cdna").op_launch_us / graph_node_prior_us(
        load_hardware("mi300x"), costs.tasks_per_op
    )
    assert 1.0 < ratio < 2.5


def test_every_cdna_chip_states_a_kernel_floor_below_its_fastest_measured_kernel() -> None:
    """A kernel's fixed run time (``kernel_floor_us``) is sourced, an assumption where carried over, and never
    above the fastest kernel its chip's measured AITER tables hold (which also moves its bytes)."""
    tables = [t for t in microbench().values() if t.kernel == "aiter"]
    for system in _chips("cdna"):
        chip = load_hardware(system).chip
        floor = chip.kernel_floor_us
        assert floor is not None and floor.source and floor.value > 0
        fastest = [r.latency_us for t in tables if chip.id in t.chips for r in t.rows if r.latency_us is not None]
        if fastest:
            assert floor.value < min(fastest)
        else:
            assert floor.assumed  # no table of its own: carried over, and said so


@pytest.mark.parametrize("system", _chips("cdna"))
def test_the_floor_prices_captured_nodes_not_a_stacks_host_time_per_kernel(system: str) -> None:
    """A node beyond an op's first costs the chip's cost per node plus a tiny kernel's run time; the host-time
    law's unit (``step_kernels`` of ``graph_task_us``) stays the node alone, as on the chips it is fitted on."""
    hw = load_hardware(system)
    task, floor = hw.chip.graph_task_us, hw.chip.kernel_floor_us
    assert task is not None and floor is not None
    one = Sourced(value=1.0, source="test")
    assert graph_node_prior_us(hw, one) == pytest.approx(task.value + floor.value)
    costs = _without_fit("sglang", "cdna").model_copy(update={"tasks_per_op": None, "step_kernels": one})
    with overridden_costs({("sglang", "cdna"): costs}):
        assert host_op_us(hw, "sglang") == pytest.approx(task.value)
