"""Simulation: determinism, consistency with `estimate`, low-load latencies and invariants after every step."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.engine import Simulation, simulate
from cloudmatrix.sim.scenario import load_scenario

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = ["prefill.instances=2", "decode.chips=16", "decode.ep=32", "requests=400"]


def _check_invariants(sim: Simulation) -> None:
    t = sim.table
    for batch in sim.decodes:
        assert (batch.pools.used <= batch.pools.capacity).all()
        assert batch.pools.used.sum() == batch.blocks.sum()
        assert (batch.occupied <= batch.cap).all() and (batch.active <= (batch.rid >= 0)).all()
    done = t.state == State.DONE
    assert np.all(t.generated[done] == t.output_len[done])  # tokens conserved
    stamps = np.vstack([getattr(t, s) for s in t.STAMPS])[:, done]
    assert np.all(np.diff(stamps, axis=0) >= 0)  # time never runs backwards within a request
    assert np.nanmax(stamps, initial=0.0) <= sim.env.now


def test_same_seed_gives_identical_results() -> None:
    a = json.dumps(simulate(load_scenario(None, SMALL)).to_dict())
    b = json.dumps(simulate(load_scenario(None, SMALL)).to_dict())
    assert a == b
    c = json.dumps(simulate(load_scenario(None, [*SMALL, "seed=1"])).to_dict())
    assert a != c


def test_every_request_finishes_once_and_tokens_are_conserved() -> None:
    sim = Simulation(load_scenario(None, SMALL), observer=_check_invariants)
    result = sim.run()
    t = result.table
    assert np.all(t.state == State.DONE) and result.to_dict()["num_requests"] == 400
    assert t.generated.sum() == t.output_len.sum()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.floats(5, 400),
    batch=st.sampled_from([8, 32, 96]),
    mtp=st.integers(0, 2),
    seed=st.integers(0, 1000),
    out_mean=st.integers(1, 300),
)
def test_invariants_hold_after_every_step(rate, batch, mtp, seed, out_mean) -> None:
    scenario = load_scenario(
        None,
        [
            *SMALL,
            "requests=150",
            f"seed={seed}",
            f"decode.batch_per_chip={batch}",
            f"decode.mtp={mtp}",
            "decode.mtp_acceptance=0.6",
            f"workload.arrivals.rate_per_s={rate}",
            f"workload.output={{kind: normal, mean: {out_mean}, std: 30}}",
            "workload.input={kind: uniform, low: 100, high: 8000}",
        ],
    )
    result = Simulation(scenario, observer=_check_invariants).run()
    assert np.all(result.table.state == State.DONE)


def test_saturated_decode_matches_estimate() -> None:
    scenario = load_scenario(
        None,
        [
            "prefill.instances=12",
            "decode.chips=16",
            "decode.ep=32",
            "requests=4000",
            "workload.arrivals={kind: closed, concurrency: 2500}",
        ],
    )
    result = simulate(scenario)
    steps = np.array(result.recorder.decode_steps)
    full = steps[steps[:, 3] == 16 * 96]  # steps with every slot of the 32 dies busy
    sim_tput = full[:, 4].sum() / (full[:, 2].sum() * 16)
    costs = StepCosts(scenario)
    expected = estimate(costs.hw, costs.model, costs.decode_deployment(kv_len=4096 + 128)).throughput_per_chip_tok_s
    assert sim_tput == pytest.approx(expected, rel=0.03)


def test_saturated_prefill_matches_estimate() -> None:
    scenario = load_scenario(None, ["prefill.instances=1", "requests=256", "workload.arrivals.rate_per_s=100000"])
    result = simulate(scenario)
    batches = np.array(result.recorder.prefill_batches)
    full = batches[batches[:, 3] == 16 * 16384]
    assert len(full) >= 3
    sim_tput = full[:, 3].sum() / (full[:, 2].sum() * 16)
    costs = StepCosts(scenario)
    expected = estimate(costs.hw, costs.model, costs.prefill_deployment()).throughput_per_chip_tok_s
    assert sim_tput == pytest.approx(expected, rel=0.03)


def test_low_load_latencies_match_the_cost_model() -> None:
    scenario = load_scenario(None, ["requests=40", "workload.arrivals.rate_per_s=0.1"])
    result = simulate(scenario)
    costs = StepCosts(scenario)
    ttft = result.ttft_s()
    expected_ttft = costs.prefill_batch_s(4096, 4096) + costs.kv_transfer_s(4096)
    assert np.median(ttft) == pytest.approx(expected_ttft, rel=0.02)
    step = costs.decode_step_s(1, 4096 + 128)
    assert np.mean(result.tpot_s()) == pytest.approx(step / 1.7, rel=0.05)


def test_trace_replay_and_cache_aware_routing() -> None:
    s = load_scenario(
        None,
        [f"workload.trace={DATA / 'mooncake_sample.jsonl'}", "requests=300", "prefill.router=cache-aware"],
    )
    d = simulate(s).to_dict()
    assert d["num_requests"] == 300 and d["slo_attainment"] > 0


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["decode.batch_per_chip=-1"], ConfigError, "decode.batch_per_chip"),
        (["decode.colour=red"], ConfigError, "decode.colour: Extra inputs are not permitted"),
        (["system=dgx"], Exception, "unknown system 'dgx'"),
        (["decode.batch_per_chip=900"], InfeasibleDeploymentError, "HBM per die"),
        (["workload.arrivals={kind: closed}"], ConfigError, "concurrency"),
        (["requests"], ConfigError, "expected key=value"),
        (["prefill.instances=20"], InfeasibleDeploymentError, "needs 480 chips"),
    ],
)
def test_bad_scenarios(overrides, error, message) -> None:
    with pytest.raises(error, match=message):
        simulate(load_scenario(None, overrides))


def test_one_token_answers_finish_at_first_token() -> None:
    result = simulate(load_scenario(None, [*SMALL, "requests=50", "workload.output={kind: fixed, value: 1}"]))
    t = result.table
    assert np.all(t.state == State.DONE) and np.array_equal(t.finish_s, t.first_token_s)
    assert np.all(t.generated == 1) and not result.recorder.decode_steps


def test_aggregated_scenario_invariants_and_low_load_ttft() -> None:
    scenario = load_scenario("h200-colocated", ["requests=200", "workload.arrivals.rate_per_s=20"])
    sim = Simulation(scenario, observer=_check_invariants)
    result = sim.run()
    assert np.all(result.table.state == State.DONE)
    assert result.table.generated.sum() == result.table.output_len.sum()
    d = result.to_dict()
    assert d["throughput_per_chip_tok_s"]["prefill"] > 0 and d["kv_transfer_ms"]["p50"] == 0.0
    alone = simulate(load_scenario("h200-colocated", ["requests=5", "workload.arrivals.rate_per_s=0.05"]))
    # one 4,096-token prompt fits one step's chunk budget (8 GPUs x 2,048): TTFT = the stack's front-end time
    # (SGLang on Hopper, the system's published stack) + that step
    costs = StepCosts(alone_scenario := load_scenario("h200-colocated"))
    step = costs.decode_step_s(0, 1.0, 4096)
    assert alone_scenario.aggregated is not None and costs.stack == "sglang" and costs.request_overhead_s > 0
    assert np.median(alone.ttft_s()) == pytest.approx(costs.request_overhead_s + step, rel=0.02)


def test_scenario_needs_one_layout() -> None:
    with pytest.raises(ConfigError, match="either prefill and decode pools, or an aggregated pool"):
        load_scenario(None, ["aggregated={instances: 1, chips: 8, batch_per_chip: 8}"])
