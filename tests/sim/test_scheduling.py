"""Co-located scheduling in the simulation: prefill-first steps never decode, the budget of mixed steps
includes the decode tokens, and a scheduler that takes in requests every N decode steps delays first tokens
under load but not on an idle engine."""

import numpy as np
import pytest

from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import Scenario


def _scenario(conc: int, requests: int, **pool) -> Scenario:
    return Scenario.model_validate(
        {
            "system": "hgx-h200",
            "model": "deepseek-r1",
            "precision": "fp8",
            "stack": "sglang",
            "aggregated": {"instances": 1, "chips": 8, "tp": 8, "batch_per_chip": max(conc // 8, 1), **pool},
            "workload": {
                "input": {"kind": "uniform", "low": 800, "high": 1024},
                "output": {"kind": "uniform", "low": 100, "high": 128},
                "arrivals": {"kind": "closed", "concurrency": conc},
            },
            "requests": requests,
            "seed": 3,
        }
    )


def _median_ttft_ms(s: Scenario) -> float:
    return float(np.median(simulate(s).ttft_s()) * 1e3)


def test_sglang_scenarios_take_the_engines_prefill_first_scheduler() -> None:
    s = _scenario(16, 32)
    assert s.aggregated is not None and s.aggregated.scheduling == "prefill-first"
    assert _scenario(16, 32, scheduling="mixed").aggregated.scheduling == "mixed"  # type: ignore[union-attr]


@pytest.mark.parametrize(("policy", "mixes"), [("prefill-first", False), ("mixed", True)])
def test_prefill_first_steps_never_decode(policy: str, mixes: bool) -> None:
    rec = simulate(_scenario(16, 64, scheduling=policy)).recorder
    prefills = {start for _, start, _, _ in rec.prefill_batches}
    assert prefills, "the run prefilled nothing"
    decoded_beside = [tokens for _, start, _, _, tokens, _ in rec.decode_steps if start in prefills and tokens]
    assert bool(decoded_beside) == mixes


@pytest.mark.parametrize("policy", ["mixed", "prefill-first", "chunk-beside-decode"])
def test_every_policy_serves_every_request(policy: str) -> None:
    result = simulate(_scenario(16, 48, scheduling=policy))
    assert result.done_ids().size == 48


def test_a_receive_interval_delays_first_tokens_under_load_only() -> None:
    busy = [_median_ttft_ms(_scenario(16, 64, recv_interval=n)) for n in (1, 10, 30)]
    assert busy[0] < busy[1] < busy[2]
    idle = [_median_ttft_ms(_scenario(1, 4, recv_interval=n)) for n in (1, 30)]
    assert idle[0] == idle[1]  # an idle scheduler polls at once


@pytest.mark.parametrize("policy", ["mixed", "prefill-first"])
def test_an_idle_engine_starts_its_first_step_with_the_first_arrival_alone(policy: str) -> None:
    result = simulate(_scenario(4, 4, scheduling=policy))
    first_tokens = result.table.first_token_s[:4]
    assert first_tokens[0] < first_tokens[1:].min()  # the other clients' prompts wait for that step
    assert np.all(first_tokens[1:] == first_tokens[1])  # and then run together


@pytest.mark.parametrize(
    ("assignment", "field"),
    [
        ("aggregated.recv_interval=0", "recv_interval"),
        ("aggregated.recv_interval=10001", "recv_interval"),
        ("aggregated.recv_interval=often", "recv_interval"),
        ("aggregated.scheduling=fastest", "scheduling"),
        ("aggregated.overlap=sometimes", "overlap"),
        ("aggregated.overlap=2", "overlap"),
    ],
)
def test_bad_scheduling_fields_are_refused_naming_the_field(assignment: str, field: str) -> None:
    from cloudmatrix.errors import ConfigError
    from cloudmatrix.sim.scenario import load_scenario

    with pytest.raises(ConfigError, match=field):
        load_scenario("h200-colocated", [assignment])
