"""Ascend graph execution costs: the start-up of each graph launch a stack's host does not hide (P3 §4.2.4's
0.6-0.8 ms per graph dispatch) and a stack's fixed cost per op of its captured graph. CloudMatrix-Infer (and a
deployment without a stack, as the paper rows run) pays neither; every stack with a ``graph`` section pays
both on every chip with a graph start-up, and nothing on a chip without one."""

import dataclasses

import pytest

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import load_stack, stack_graph, stack_ids
from cloudmatrix.cost.pricing import graph_op_launch_us
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate
from cloudmatrix.studies.graph_fit import GRAPH_FIT_CORPORA, fit_graph_op_launch

GRAPH_STACKS = [s for s in stack_ids() if load_stack(s).graph is not None]
ASCEND_SYSTEMS = [s for s in system_ids() if load_hardware(s).chip.graph_launch_us is not None]

DECODE = Deployment(
    phase=Phase.DECODE,
    num_chips=16,
    ep=32,
    tp=2,
    batch_per_chip=2,
    input_len=3500,
    output_len=1000,
    mtp=3,
    mtp_acceptance=0.775,
    reserve_gb=16,
)


def _with_launch(system: str, launch_us: float):  # type: ignore[no-untyped-def]
    hw = load_hardware(system)
    chip = hw.chip.model_copy(update={"launch_us": Sourced(value=launch_us, source="test")})
    return hw.model_copy(update={"chip": chip})


def test_graph_stacks_and_chips_exist() -> None:
    assert "sglang-ascend" in GRAPH_STACKS and "cloudmatrix-infer" not in GRAPH_STACKS
    assert {"cloudmatrix384", "atlas-800t-a3"} <= set(ASCEND_SYSTEMS)
    assert not any(load_hardware(s).chip.family != "ascend" for s in ASCEND_SYSTEMS)


@pytest.mark.parametrize("stack", GRAPH_STACKS)
@pytest.mark.parametrize("mtp", [0, 3])
def test_decode_step_pays_exposed_launches_and_per_op_cost(stack: str, mtp: int) -> None:
    d = dataclasses.replace(DECODE, mtp=mtp, mtp_acceptance=0.775 if mtp else 0.0)
    hw = load_hardware("atlas-800t-a3")
    graph = stack_graph(stack)
    assert graph is not None and hw.chip.graph_launch_us is not None
    device = estimate(hw, "deepseek-r1", d).step
    # the op launches of one step, counted by pricing the device step at 1 µs more per op
    ops = (estimate(_with_launch("atlas-800t-a3", hw.chip.launch_us.value + 1), "deepseek-r1", d).step.step_s
           - device.step_s) * 1e6  # fmt: skip
    priced = estimate(hw, "deepseek-r1", dataclasses.replace(d, stack=stack)).step
    starts = graph.exposed_launches(mtp > 0) * hw.chip.graph_launch_us.value
    host = load_stack(stack).costs("ascend").step_overhead_us.value
    assert priced.breakdown_us["graph_launch"] == pytest.approx(starts)
    per_op = graph_op_launch_us(hw, stack)  # the fit where stated (SGLang), else the runtime's prior (vLLM)
    assert per_op > 0
    assert (priced.step_s - device.step_s) * 1e6 == pytest.approx(starts + host + ops * per_op)


def test_speculation_launches_more_graphs_than_plain_decode() -> None:
    graph = stack_graph("sglang-ascend")
    assert graph is not None
    assert graph.exposed_launches(True) > graph.exposed_launches(False) >= 1
    hw = load_hardware("atlas-800t-a3")
    d = dataclasses.replace(DECODE, stack="sglang-ascend")
    ngram = estimate(hw, "deepseek-r1", dataclasses.replace(d, speculation="ngram")).step
    mtp = estimate(hw, "deepseek-r1", d).step
    start = hw.chip.graph_launch_us.value  # type: ignore[union-attr]
    assert ngram.breakdown_us["graph_launch"] == pytest.approx(graph.exposed_launches(False) * start)
    assert mtp.breakdown_us["graph_launch"] == pytest.approx(graph.exposed_launches(True) * start)


@pytest.mark.parametrize("system", ASCEND_SYSTEMS)
def test_without_a_graph_stack_nothing_is_added(system: str) -> None:
    # the paper rows carry no stack and CloudMatrix-Infer hides its launches (P3 §4.2.4's fix)
    d = Deployment(phase=Phase.DECODE, num_chips=32, batch_per_chip=8, mtp=1, mtp_acceptance=0.7)
    for stack in (None, "cloudmatrix-infer"):
        step = estimate(system, "deepseek-r1", dataclasses.replace(d, stack=stack)).step
        assert "graph_launch" not in step.breakdown_us


def test_prefill_has_no_graph_launch() -> None:
    d = Deployment(phase=Phase.PREFILL, num_chips=16, tokens_per_chip=4096, stack="sglang-ascend")
    assert "graph_launch" not in estimate("atlas-800t-a3", "deepseek-r1", d).step.breakdown_us


def test_fit_uses_fitted_rows_only_and_matches_the_catalog() -> None:
    fit = fit_graph_op_launch("sglang-ascend")
    graph = stack_graph("sglang-ascend")
    assert graph is not None and graph.op_launch_us is not None and graph.op_launch_us.source.startswith("CALIB")
    assert fit.op_launch_us == pytest.approx(graph.op_launch_us.value, rel=0.01)
    from cloudmatrix.catalog.corpus import load_corpora

    roles = {r.id: r.role for r in load_corpora(list(GRAPH_FIT_CORPORA))}
    assert len(fit.rows) >= 4 and all(roles[r.row_id] == "fitted" for r in fit.rows)
    # the fit leaves the low-latency DeepSeek EP rows within 5 % and the Qwen EAGLE-3 rows within 12 % on TPOT;
    # the 832-client run stays too fast (-17 %: its EP dispatch and combine are priced on the SuperPoD's HCCS
    # fabric, as DeepEP-Ascend runs them, and what its 26 sequences a die pay beyond that is not priced)
    gaps = fit.gaps_pct()
    assert all(abs(gaps[r]) < 5 for r in gaps if "-ll-" in r)
    assert all(abs(gaps[r]) < 12 for r in gaps if "eagle3" in r)
    assert -20 < gaps["sga-r1-w8a8-32c-pd-c832"] < -12
