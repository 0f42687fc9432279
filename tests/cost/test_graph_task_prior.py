"""The cost per op of a graph captured op by op is a runtime property before it is a fit: every chip whose graph
launches have a start-up (Ascend; and the HIP chips, tests/cost/test_hip_graph_prior.py) states its fixed cost
per captured task, sourced and within the published bounds, and (the 910B and 910C) the measured run time of a
near-empty task, every stack with a ``graph`` section states its tasks per op, and tasks x (task + floor) prices the
stack wherever no fitted cost per op may be used (vLLM-Ascend, which has no rows; a hold-out without the fit
rows), by the code path the CDNA chips' HIP graphs use (``graph_node_prior_us``)."""

import dataclasses

import pytest

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import GRAPH_ENTRY, load_stack, overridden_costs, stack_graph, stack_ids
from cloudmatrix.cost.pricing import graph_node_prior_us, graph_op_launch_us, graph_task_prior_us, task_prior_us
from cloudmatrix.estimate import estimate
from cloudmatrix.studies.graph_fit import fit_graph_op_launch
from tests.cost.test_graph_launch import DECODE

GRAPH_STACKS = [s for s in stack_ids() if load_stack(s).graph is not None]
SYSTEMS = system_ids()
# ASCEND-RS: the smallest published launch-and-synchronise round trip of one kernel on a 910B3 (host launch,
# device task, wake-up from aclrtSynchronizeStream); a replayed graph pays only the device part of it
ROUND_TRIP_US = 9.0
# ASCEND-TINY-TASK: a fused vector op on an Atlas A3 totals at most 1.66 us over all its calls (SuperKernel example),
# so one near-empty task takes no longer
A3_TINY_TASK_US = 1.66


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_chip_with_graph_start_ups_states_its_cost_per_captured_task(system: str) -> None:
    chip = load_hardware(system).chip
    if chip.graph_launch_us is None:
        # HIP graphs state a cost per node (tests/cost/test_hip_graph_prior.py), CUDA graphs a cost per kernel node
        # that only the hold-out fall-backs price (tests/validation/test_host_time_law.py)
        assert chip.graph_task_us is not None and chip.graph_task_us.source
        return
    task = chip.graph_task_us
    assert task is not None and task.source and task.assumed  # no CANN figure: a prior, and said so
    assert 0 < task.value < ROUND_TRIP_US


@pytest.mark.parametrize("stack", GRAPH_STACKS)
@pytest.mark.parametrize("system", ["atlas-800t-a3", "cloudmatrix384"])
def test_the_prior_is_tasks_per_op_times_the_cost_per_task(stack: str, system: str) -> None:
    hw = load_hardware(system)
    graph = stack_graph(stack)
    assert graph is not None and graph.tasks_per_op.value >= 1 and graph.tasks_per_op.source
    assert hw.chip.graph_task_us is not None
    prior = graph_task_prior_us(hw, graph)
    floor = hw.chip.kernel_floor_us
    assert floor is not None  # the 910C states it: the closed form below is not the floorless one
    assert prior == pytest.approx(graph.tasks_per_op.value * (hw.chip.graph_task_us.value + floor.value))
    expected = prior if graph.op_launch_us is None else graph.op_launch_us.value
    assert graph_op_launch_us(hw, stack) == pytest.approx(expected)


ASCEND_FLOORS = [
    s for s in SYSTEMS if load_hardware(s).chip.family == "ascend" and load_hardware(s).chip.kernel_floor_us is not None
]


@pytest.mark.parametrize("system", ASCEND_FLOORS)
def test_an_ascend_floor_is_a_measured_tiny_task_inside_the_round_trip(system: str) -> None:
    """Where an Ascend chip states a near-empty task's run time, it is sourced, an assumption (the table that
    measures it does not name its chip), no longer than the A3's tiny fused task, and with the cost per task
    still inside the launch-and-synchronise round trip that bounds both."""
    chip = load_hardware(system).chip
    floor, task = chip.kernel_floor_us, chip.graph_task_us
    assert floor is not None and task is not None and floor.source and floor.assumed
    assert 0 < floor.value <= A3_TINY_TASK_US
    assert task.value + floor.value < ROUND_TRIP_US


def test_the_floor_prices_captured_tasks_not_the_host_time_per_kernel() -> None:
    """One captured task costs the chip's cost per task plus a near-empty task's run time (the code path of the
    CDNA chips); the host-time law's unit (``task_prior_us``, ``step_kernels`` of ``graph_task_us``) stays the
    task alone."""
    hw = load_hardware("atlas-800t-a3")
    task, floor = hw.chip.graph_task_us, hw.chip.kernel_floor_us
    assert task is not None and floor is not None
    one = Sourced(value=1.0, source="test")
    assert graph_node_prior_us(hw, one) == pytest.approx(task.value + floor.value)
    assert task_prior_us(hw, one) == pytest.approx(task.value)


def test_the_floor_does_not_reach_a_deployment_without_a_stack() -> None:
    """The paper's CloudMatrix-Infer rows run no stack's op-by-op graph: no cost per op, floor or not."""
    assert graph_op_launch_us(load_hardware("cloudmatrix384"), None) == 0.0


def test_a_stack_without_rows_is_priced_with_the_prior_not_another_stacks_fit() -> None:
    graph = stack_graph("vllm-ascend")
    assert graph is not None and graph.op_launch_us is None
    hw = load_hardware("atlas-800t-a3")
    assert graph_op_launch_us(hw, "vllm-ascend") == pytest.approx(graph_task_prior_us(hw, graph))


def test_the_prior_prices_the_step_when_the_fit_is_withdrawn() -> None:
    """Withdrawing the fitted cost (as a hold-out without its rows does) leaves the runtime's prior: the step
    is slower than with no cost per op, and it moves from the fitted step in proportion to the prior's gap to the
    fit per op (the step is linear in the cost per op; the counted prior, 2.7 tasks per op, sits above the fit)."""
    d = dataclasses.replace(DECODE, stack="sglang-ascend")
    graph = stack_graph("sglang-ascend")
    assert graph is not None and graph.op_launch_us is not None
    fitted = estimate("atlas-800t-a3", "deepseek-r1", d).step.step_s
    prior_graph = graph.model_copy(update={"op_launch_us": None})
    zero_graph = graph.model_copy(update={"op_launch_us": graph.op_launch_us.model_copy(update={"value": 0.0})})
    with overridden_costs({("sglang-ascend", GRAPH_ENTRY): prior_graph}):
        prior = estimate("atlas-800t-a3", "deepseek-r1", d).step.step_s
    with overridden_costs({("sglang-ascend", GRAPH_ENTRY): zero_graph}):
        zero = estimate("atlas-800t-a3", "deepseek-r1", d).step.step_s
    hw = load_hardware("atlas-800t-a3")
    prior_us, fit_us = graph_task_prior_us(hw, graph), graph.op_launch_us.value
    assert zero < prior and zero < fitted
    assert (prior - zero) / (fitted - zero) == pytest.approx(prior_us / fit_us, rel=1e-6)


def test_the_rows_fit_stays_within_a_factor_two_of_the_runtime_prior() -> None:
    """The A3 rows do not contradict the runtime: their fitted cost per op is within a factor 2 of the prior
    (about 0.87: 2.7 tasks per op at 5.7 µs each, a task's fixed cost and a near-empty task's run time)."""
    hw = load_hardware("atlas-800t-a3")
    graph = stack_graph("sglang-ascend")
    assert graph is not None
    ratio = fit_graph_op_launch("sglang-ascend").op_launch_us / graph_task_prior_us(hw, graph)
    assert 0.5 < ratio < 2.0
