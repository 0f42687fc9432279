"""A disaggregated decode engine's intake of a generation-only request (stacks.yaml ``handoff_steps``): the
request waits for the engine's iteration boundary, its KV pull is polled once per iteration and its first
token leaves with its first generation step. The simulation lands the KV that many of the engine's steps
later; an idle engine adds only the first step; a stack that states none lands it at once."""

import numpy as np
import pytest

from cloudmatrix.catalog.stack_loop import handoff_intake_steps, prompt_wait_steps, stack_overlaps
from cloudmatrix.catalog.stacks import load_stack, stack_ids
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.scenario import Scenario


@pytest.mark.parametrize("stack", stack_ids())
def test_every_stack_states_its_intake_with_a_source_or_adds_none(stack: str) -> None:
    steps = load_stack(stack).handoff_steps
    if steps is None:
        assert handoff_intake_steps(stack) == 0.0
        return
    assert steps.source and steps.value >= 0
    assert handoff_intake_steps(stack) == prompt_wait_steps(stack_overlaps(stack)) + steps.value


def test_a_front_end_takes_its_engines_intake() -> None:
    assert load_stack("dynamo-trtllm").handoff_steps == load_stack("trtllm").handoff_steps
    assert handoff_intake_steps("dynamo-trtllm") > 0.0
    assert handoff_intake_steps(None) == 0.0


def _scenario(stack: str | None, clients: int, spread: bool = False) -> Scenario:
    output = {"kind": "uniform", "low": 16, "high": 112} if spread else {"kind": "fixed", "value": 64}
    return Scenario.model_validate(
        {
            "system": "gb200-nvl72",
            "model": "gpt-oss-120b",
            "precision": "fp4",
            "activation_precision": "fp8",
            "kv_precision": "fp8",
            "stack": stack,
            "prefill": {"instances": 1, "chips": 1, "tokens_per_chip": 20000},
            "decode": {"instances": 1, "chips": 2, "ep": 2, "batch_per_chip": 64},
            "workload": {
                "input": {"kind": "fixed", "value": 1024},
                "output": output,
                "arrivals": {"kind": "closed", "concurrency": clients},
            },
            "requests": 8 * clients,
            "seed": 0,
        }
    )


def _run(scenario: Scenario, intake: bool) -> np.ndarray:
    sim = Simulation(scenario)
    if not intake:
        sim.costs.intake_steps = 0.0
    result = sim.run()
    t = result.table
    return (t.first_token_s - t.prefill_end_s)[result.done_ids()]


def test_an_idle_engine_adds_its_first_generation_step() -> None:
    scenario = _scenario("dynamo-trtllm", 1)
    one_step = StepCosts(scenario).decode_step_s(1, 1024)
    with_intake, without = _run(scenario, True), _run(scenario, False)
    assert with_intake - without == pytest.approx(np.full(8, one_step), rel=1e-9)


def test_a_busy_engine_adds_its_intake_steps_and_a_stack_without_adds_nothing() -> None:
    scenario = _scenario("dynamo-trtllm", 16, spread=True)  # answers of many lengths: requests meet a busy engine
    costs = StepCosts(scenario)
    with_intake, without = _run(scenario, True), _run(scenario, False)
    gap = np.median(with_intake) - np.median(without)
    busiest_step = costs.decode_step_s(8, 1024 + 112)  # 16 sequences over 2 dies at most
    assert costs.intake_s(0, 0.0) <= gap <= costs.intake_steps * busiest_step * 1.01
    assert gap > costs.decode_step_s(1, 1024) * 1.5  # more than the idle engine's one step
    plain = _scenario("sglang", 16, spread=True)
    assert StepCosts(plain).intake_steps == 0.0
    assert np.array_equal(_run(plain, True), _run(plain, False))
