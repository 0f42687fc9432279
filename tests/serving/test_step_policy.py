"""How an engine's scheduler splits a co-located step's token budget (serving/step_policy.py), for every
policy and any budget, decode load and queue state (property tests), and which engines run which."""

from hypothesis import given
from hypothesis import strategies as st

from cloudmatrix.catalog.stacks import SCHEDULING_POLICIES, load_stack
from cloudmatrix.serving.step_policy import share_step

budgets = st.integers(min_value=1, max_value=1_000_000)
decode_tokens = st.integers(min_value=0, max_value=2_000_000)


@given(st.sampled_from(SCHEDULING_POLICIES), budgets, decode_tokens, st.booleans())
def test_a_step_never_takes_more_prompt_tokens_than_the_budget(policy, budget, decoding, pending) -> None:
    share = share_step(policy, budget, decoding, pending)
    assert 0 <= share.prompt_tokens <= budget


@given(budgets, decode_tokens)
def test_mixed_steps_give_prompts_what_the_decode_tokens_leave(budget, decoding) -> None:
    for pending in (True, False):
        share = share_step("mixed", budget, decoding, pending)
        assert share.decodes
        assert share.prompt_tokens + min(decoding, budget) == budget


@given(budgets, decode_tokens)
def test_prefill_first_pauses_the_batch_exactly_while_prompts_wait(budget, decoding) -> None:
    waiting = share_step("prefill-first", budget, decoding, True)
    assert (waiting.decodes, waiting.prompt_tokens) == (False, budget)
    idle = share_step("prefill-first", budget, decoding, False)
    assert idle.decodes and idle.prompt_tokens == 0


@given(budgets, decode_tokens, st.booleans())
def test_chunk_beside_decode_keeps_the_whole_budget_for_prompts(budget, decoding, pending) -> None:
    share = share_step("chunk-beside-decode", budget, decoding, pending)
    assert share.decodes and share.prompt_tokens == budget


def test_each_gpu_engine_states_its_scheduler_with_a_source() -> None:
    expected = {"sglang": "prefill-first", "vllm": "mixed", "trtllm": "mixed", "dynamo-trtllm": "mixed"}
    for stack, policy in expected.items():
        d = load_stack(stack).defaults
        assert d.scheduling == policy, stack
        assert d.scheduling_source, stack
