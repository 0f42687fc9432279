"""Budgets a scenario leaves out come from its serving stack's defaults; stated ones win."""

from cloudmatrix.catalog.stacks import load_stack
from cloudmatrix.sim.scenario import Scenario

AGG = {"instances": 1, "chips": 8, "batch_per_chip": 8}


def _scenario(**kw) -> Scenario:
    return Scenario.model_validate({"system": "hgx-h200", "model": "deepseek-r1", "precision": "fp8", **kw})


def test_chunk_budget_is_the_stacks_per_instance_budget_over_its_chips() -> None:
    budget = load_stack("vllm").defaults.chunk_tokens
    assert budget is not None
    s = _scenario(stack="vllm", aggregated=AGG)
    assert s.aggregated is not None and s.aggregated.chunk_tokens_per_chip == round(budget.value / 8)
    stated = _scenario(stack="vllm", aggregated=AGG | {"chunk_tokens_per_chip": 512})
    assert stated.aggregated is not None and stated.aggregated.chunk_tokens_per_chip == 512


def test_dynamo_takes_its_engines_defaults_and_kv_format_can_be_stated() -> None:
    assert load_stack("dynamo-trtllm").defaults == load_stack("trtllm").defaults
    assert _scenario(stack="trtllm", aggregated=AGG).kv_precision == "bf16"
    assert _scenario(stack="trtllm", aggregated=AGG, kv_precision="fp8").kv_precision == "fp8"


def test_a_stack_without_defaults_keeps_the_schema_defaults() -> None:
    s = Scenario.model_validate({"aggregated": {"instances": 1, "chips": 16, "batch_per_chip": 8}})
    assert s.aggregated is not None and s.aggregated.chunk_tokens_per_chip == 2048  # CloudMatrix-Infer states none
