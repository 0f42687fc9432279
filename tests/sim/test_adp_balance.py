"""TensorRT-LLM's attention-DP balance: new prompts wait until every DP rank has one (or a timeout), then a
batching wait; the gate follows the engine's counters, never holds a prompt without bound, and in the
simulation lengthens TTFT under decode load only, by tens of decode steps at low arrival rates."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudmatrix.serving.adp_balance import AttentionDpGate
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import Scenario


def test_a_lone_prompt_waits_for_the_timeout() -> None:
    gate = AttentionDpGate(ranks=4, timeout_iters=50, batching_wait_iters=10)
    held = [gate.holds(1, every_rank_decodes=True) for _ in range(50)]
    assert all(held[:49]) and not held[49]  # the 50th iteration releases it


def test_prompts_on_every_rank_wait_the_batching_iterations_then_start() -> None:
    gate = AttentionDpGate(ranks=2, timeout_iters=50, batching_wait_iters=10)
    held = [gate.holds(2, every_rank_decodes=True) for _ in range(11)]
    assert all(held[:10]) and not held[10]


def test_prompts_start_at_once_where_some_rank_runs_nothing() -> None:
    gate = AttentionDpGate(ranks=4, timeout_iters=50, batching_wait_iters=10)
    assert not gate.holds(1, every_rank_decodes=False)
    assert not gate.holds(4, every_rank_decodes=False)


def test_the_timeout_count_runs_while_no_prompt_waits() -> None:
    gate = AttentionDpGate(ranks=4, timeout_iters=50, batching_wait_iters=10)
    gate.idle_iterations(130, every_rank_decodes=True)  # 2 timeouts and 30 iterations into the third
    held = [gate.holds(1, every_rank_decodes=True) for _ in range(20)]
    assert all(held[:19]) and not held[19]


@given(
    ranks=st.integers(1, 16),
    timeout=st.integers(1, 100),
    batching=st.integers(0, 30),
    waiting=st.lists(st.integers(0, 20), min_size=1, max_size=400),
    decoding=st.lists(st.booleans(), min_size=1, max_size=400),
)
def test_a_waiting_prompt_is_never_held_past_timeout_plus_batching(
    ranks: int, timeout: int, batching: int, waiting: list[int], decoding: list[bool]
) -> None:
    gate = AttentionDpGate(ranks, timeout, batching)
    run = 0
    for i, n in enumerate(waiting):
        held = gate.holds(max(n, 1), decoding[i % len(decoding)])
        run = run + 1 if held else 0
        assert run <= timeout + batching


def _scenario(conc: int, balance: dict | None) -> Scenario:
    # DP attention over 4 GPUs (TP 1 per rank), the experts split 4 ways, as TensorRT-LLM's DPA runs
    pool = {"instances": 1, "chips": 4, "tp": 1, "moe_tp": 4, "batch_per_chip": max(conc // 4, 1)}
    return Scenario.model_validate(
        {
            "system": "hgx-b200",
            "model": "gpt-oss-120b",
            "precision": "fp4",
            "activation_precision": "fp8",
            "stack": "trtllm",
            "aggregated": pool | ({"attention_dp_balance": balance} if balance else {}),
            "workload": {
                "input": {"kind": "uniform", "low": 800, "high": 1024},
                "output": {"kind": "uniform", "low": 820, "high": 1024},
                "arrivals": {"kind": "closed", "concurrency": conc},
            },
            "requests": 4 * conc,
            "seed": 3,
        }
    )


def test_the_balance_lengthens_ttft_under_load_by_tens_of_steps_within_its_bound() -> None:
    balance = {"timeout_iters": 50, "batching_wait_iters": 10}
    off, on = simulate(_scenario(32, None)), simulate(_scenario(32, balance))
    step_s = float(np.median(on.tpot_s()))
    added_steps = (float(np.median(on.ttft_s())) - float(np.median(off.ttft_s()))) / step_s
    # few arrivals per step (32 clients of ~900-token answers over 4 ranks): prompts wait for the 50-step timeout
    # or for every rank to have one and 10 steps more; never longer than both
    assert 10 < added_steps < 60
    assert on.done_ids().size == off.done_ids().size == 128


def test_an_idle_engine_is_not_held() -> None:
    balance = {"timeout_iters": 50, "batching_wait_iters": 10}
    off, on = simulate(_scenario(1, None)), simulate(_scenario(1, balance))
    assert np.array_equal(on.ttft_s(), off.ttft_s())


@pytest.mark.parametrize("value", ["{timeout_iters: 0, batching_wait_iters: 10}", "{timeout_iters: 50}", "often"])
def test_a_bad_balance_is_refused_naming_the_field(value: str) -> None:
    import yaml

    from cloudmatrix.errors import CloudMatrixError

    data = _scenario(4, None).model_dump(mode="json", exclude_unset=True)
    data["aggregated"]["attention_dp_balance"] = yaml.safe_load(value)
    with pytest.raises((CloudMatrixError, ValueError), match="attention_dp_balance"):
        Scenario.model_validate(data)
