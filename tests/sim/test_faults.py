"""Faults in the simulation (issue 27): the schema, each policy's price as the sum of its mechanism's parts,
and invariants under faults (no request lost without being counted, finite non-negative figures, the same
result for the same seed)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.faults import recovery_constants
from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.model_load import model_bytes, warm_start_s
from cloudmatrix.errors import ConfigError
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.engine import Simulation, simulate
from cloudmatrix.sim.fault_spec import POLICIES, Fault, FaultsSpec, PoolShape, resolve, scope
from cloudmatrix.sim.recovery import Instance, price
from cloudmatrix.sim.scenario import load_scenario, scenario_from


def _scenario(faults: dict[str, Any] | list[Any], **extra: Any) -> Any:
    data: dict[str, Any] = {
        "name": "faults-small",
        "system": "cloudmatrix384",
        "model": "deepseek-r1",
        "precision": "int8",
        "prefill": {"instances": 2, "chips": 16, "ep": 32, "attention_tp": 4},
        "decode": {"instances": 1, "chips": 16, "ep": 32, "batch_per_chip": 16, "mtp": 1, "mtp_acceptance": 0.7},
        "workload": {
            "input": {"kind": "fixed", "value": 1024},
            "output": {"kind": "fixed", "value": 128},
            "arrivals": {"kind": "poisson", "rate_per_s": 60},
        },
        "requests": 400,
        "seed": 1,
        "faults": faults,
        **extra,
    }
    return scenario_from(data, None, "test")


def _loss(policy: str, kind: str = "npu_loss", at_s: float = 3.0, requests: str = "retry") -> dict[str, Any]:
    event = {"at_s": at_s, "kind": kind, "target": "decode.0.die.5"}
    return {"events": [event], "policy": policy, "requests": requests, "repair_s": 5}


# ---- schema ------------------------------------------------------------------------------------------------
def test_a_list_is_the_events_and_a_mapping_carries_rates_and_policy() -> None:
    listed = FaultsSpec.model_validate([{"at_s": 60, "kind": "die_loss", "target": "decode.0.die.17"}])
    assert listed.events[0].die == 17 and listed.policy == "restart"
    rated = FaultsSpec.model_validate({"rates": {"die_per_hour": 1.2e-4}, "policy": "elastic-ep"})
    assert rated.rates is not None and rated.rates.die_per_hour == 1.2e-4


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("cache.0", "expected one of decode, prefill"),
        ("decode", "expected POOL.INSTANCE"),
        ("decode.0.npu.3", "expected"),
    ],
)
def test_a_bad_target_names_the_field(target: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        _scenario([{"at_s": 1, "kind": "die_loss", "target": target}])


@pytest.mark.parametrize(("target", "says"), [("decode.1.die.0", "instance 1"), ("decode.0.die.32", "die 32")])
def test_a_target_beyond_the_deployment_is_refused_with_its_bounds(target: str, says: str) -> None:
    sc = _scenario([{"at_s": 1, "kind": "die_loss", "target": target}])
    with pytest.raises(ConfigError, match=says):
        Simulation(sc)


def test_scope_takes_the_die_its_package_its_node_or_the_instance() -> None:
    assert scope("die_loss", 17, 320, 2, 16) == (17,)
    assert scope("npu_loss", 17, 320, 2, 16) == (16, 17)
    assert scope("node_loss", 17, 320, 2, 16) == tuple(range(16, 32))
    assert scope("instance_crash", 17, 320, 2, 16) == tuple(range(320))


def test_rates_draw_the_same_faults_for_a_seed_and_others_for_another() -> None:
    spec = FaultsSpec.model_validate({"rates": {"die_per_hour": 0.05, "horizon_s": 36000}})
    kw = {"pools": {"decode": PoolShape(1, 320)}, "dies_per_chip": 2, "dies_per_node": 16, "horizon_s": None}
    a, b, c = resolve(spec, seed=3, **kw), resolve(spec, seed=3, **kw), resolve(spec, seed=4, **kw)
    assert a == b and a != c
    assert 0.7 * 160 < len(a) < 1.3 * 160  # 0.05 x 320 dies x 10 h expected (Poisson sd 13)
    assert all(0 <= f.at_s <= 36000 for f in a) and [f.at_s for f in a] == sorted(f.at_s for f in a)


def test_fleet_rates_are_the_catalogs() -> None:
    spec = FaultsSpec.model_validate({"rates": {"fleet": True, "horizon_s": 3.6e6}})  # 1,000 h
    kw = {"pools": {"decode": PoolShape(1, 320)}, "dies_per_chip": 2, "dies_per_node": 16, "horizon_s": None}
    drawn = resolve(spec, seed=0, **kw)
    dies = sum(f.kind == "die_loss" for f in drawn)
    nodes = sum(f.kind == "node_loss" for f in drawn)
    # 160 NPUs x 1/(7.9 h x 1024) x 1,000 h = 19.8 die losses; 20 nodes x 4.79e-5 x 1,000 h = 0.96 node losses
    assert 8 <= dies <= 32 and 0 <= nodes <= 5


def test_rates_without_a_horizon_are_refused() -> None:
    with pytest.raises(ConfigError, match="horizon_s"):
        Simulation(_scenario({"rates": {"die_per_hour": 1e-4}}))


# ---- prices ------------------------------------------------------------------------------------------------
def _paper_instance() -> Instance:
    sc = load_scenario("cm384-die-loss")
    from cloudmatrix.sim.costs import StepCosts

    c = StepCosts(sc)
    return Instance(c.hw, c.model, c.decode_deployment())


def test_a_restart_costs_the_sum_of_its_priced_parts() -> None:
    inst = _paper_instance()
    k = recovery_constants("ascend")
    rec = price(inst, Fault(at_s=0, kind="die_loss", instance=0, dies=(17,)), "restart")
    hw = load_hardware("cloudmatrix384")
    load = warm_start_s(hw, model_bytes(load_model("deepseek-r1"), "int8"), 160) - hw.system.ems.warm_setup_s.value
    assert rec.parts_s == pytest.approx({"detect": k.detect_s.value, "load_weights": load, "engine_init": 87.04})
    assert rec.pause_s == pytest.approx(sum(rec.parts_s.values()))
    assert rec.cut == "instance" and rec.degraded_fraction == 1.0


def test_elastic_ep_moves_the_uncopied_experts_and_redundant_experts_drops_them() -> None:
    inst = _paper_instance()
    fault = Fault(at_s=0, kind="npu_loss", instance=0, dies=(16, 17))
    elastic, revive = price(inst, fault, "elastic-ep"), price(inst, fault, "redundant-experts")
    m = load_model("deepseek-r1")
    expert = m.expert_params() * m.num_moe_layers * 1  # INT8: one byte a weight
    up = load_hardware("cloudmatrix384").system.planes.scale_up
    assert elastic.parts_s["expert_coverage"] == pytest.approx(
        2 * expert / (up.bw_gb_s_per_die.value * 1e9 * up.efficiency.value)
    )
    assert revive.experts_lost == 2 and elastic.experts_lost == 0
    assert 0.99 < elastic.degraded_fraction < 1.0 and elastic.fenced == (16, 17)


def test_a_spare_instance_pauses_least_and_holds_a_whole_instance_idle() -> None:
    inst = _paper_instance()
    fault = Fault(at_s=0, kind="die_loss", instance=0, dies=(3,))
    pauses = {p: price(inst, fault, p).pause_s for p in POLICIES}
    assert pauses["spare-instance"] < pauses["redundant-experts"] <= pauses["elastic-ep"] < pauses["restart"]
    assert price(inst, fault, "spare-instance").spare_chips == 160


def test_a_die_level_policy_cannot_route_around_a_whole_instance() -> None:
    inst = _paper_instance()
    crash = Fault(at_s=0, kind="instance_crash", instance=0, dies=tuple(range(320)))
    rec = price(inst, crash, "elastic-ep")
    assert rec.policy == "restart" and "cannot route around" in rec.note


# ---- the simulation under faults ---------------------------------------------------------------------------
def _finite_non_negative(value: Any, path: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_non_negative(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_non_negative(v, f"{path}[{i}]")
    elif isinstance(value, float | int) and not isinstance(value, bool):
        assert math.isfinite(value) and value >= 0, f"{path} = {value}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(POLICIES),
    kind=st.sampled_from(["die_loss", "npu_loss", "node_loss", "instance_crash", "straggler"]),
    at_s=st.floats(0.0, 8.0),
    mode=st.sampled_from(["retry", "fail"]),
    seed=st.integers(0, 50),
)
def test_no_request_is_lost_without_being_counted(policy: str, kind: str, at_s: float, mode: str, seed: int) -> None:
    sc = _scenario(_loss(policy, kind, at_s, mode), seed=seed)
    sim = Simulation(sc)
    d = sim.run().to_dict()
    f = d["faults"]
    counts = f["requests"]
    states = sim.table.state[: len(sim.table)]
    done, failed = int((states == State.DONE).sum()), int((states == State.CANCELLED).sum())
    assert done + failed == sc.requests  # every request finished or was counted failed
    assert failed == counts["failed"] and counts["cut"] == counts["retried"] + counts["failed"]
    assert counts["retried_done"] == counts["retried"]
    assert 0.0 <= f["availability"] <= 1.0
    _finite_non_negative({k: v for k, v in d.items() if k != "intervals"})


@pytest.mark.parametrize("policy", POLICIES)
def test_a_run_with_faults_is_the_same_for_the_same_seed(policy: str) -> None:
    faults = _loss(policy) | {"rates": {"die_per_hour": 200.0, "horizon_s": 10}}
    a, b = simulate(_scenario(faults)).to_dict(), simulate(_scenario(faults)).to_dict()
    assert a == b
    assert len(a["faults"]["events"]) > 1  # the written fault and drawn ones


def test_a_restart_cuts_the_whole_instance_and_a_die_loss_only_that_die() -> None:
    whole = simulate(_scenario(_loss("restart"))).to_dict()["faults"]["requests"]["cut"]
    die = simulate(_scenario(_loss("elastic-ep", "die_loss"))).to_dict()["faults"]["requests"]["cut"]
    assert whole > 10 * die > 0


def test_the_instance_serves_nothing_during_the_pause_and_rejoins_after_repair() -> None:
    d = simulate(_scenario(_loss("elastic-ep"))).to_dict()
    e = d["faults"]["events"][0]
    series = d["faults"]["decode_tok_s_series"]["values"]
    start, resume = math.ceil(e["at_s"]) + 1, int(e["resume_at_s"])
    assert all(v == 0 for v in series[start:resume])
    assert e["full_capacity_at_s"] == pytest.approx(e["resume_at_s"] + 5 + e["reintegration_pause_s"])


def test_drawn_faults_fence_their_own_dies() -> None:
    faults = {"rates": {"die_per_hour": 400.0, "horizon_s": 6}, "policy": "elastic-ep", "repair_s": 1000}
    sim = Simulation(_scenario(faults))
    sim.run()
    f = sim.faults
    assert f is not None and len(f.events) >= 2
    lost = {d for fault in f.faults[: len(f.events)] for d in fault.dies}
    assert set(np.flatnonzero(sim.decodes[0].fenced)) == lost  # every lost die, and only those, still fenced
    assert [r.fenced for r in f.recoveries] == [fault.dies for fault in f.faults]


def test_a_straggler_slows_steps_for_its_duration_and_cuts_nothing() -> None:
    event = {"at_s": 1, "kind": "straggler", "target": "decode.0.die.3", "slowdown": 3.0, "duration_s": 4}
    d = simulate(_scenario([event])).to_dict()["faults"]
    assert d["requests"]["cut"] == 0 and d["events"][0]["degraded_fraction"] == pytest.approx(1 / 3)
