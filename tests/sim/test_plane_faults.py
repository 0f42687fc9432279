"""A degraded UB, RDMA or VPC plane as a fault (issue 27): the schema, the degraded decode step priced by
the cost model on hardware overridden as `--set` would, and the run it slows for its window."""

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.overrides import apply_hardware_overrides
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.errors import ConfigError
from cloudmatrix.estimate import estimate
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.fault_spec import Fault, FaultsSpec
from cloudmatrix.sim.recovery import Instance, plane_step_factor, price
from tests.sim.test_faults import _finite_non_negative, _scenario

UB = "system.planes.scale_up"


@pytest.fixture(scope="module")
def inst() -> Instance:
    dep = Deployment(
        phase=Phase.DECODE, num_chips=16, ep=32, batch_per_chip=16, input_len=1024, output_len=128, precision="int8"
    )
    return Instance(load_hardware("cloudmatrix384"), load_model("deepseek-r1"), dep)


def _event(**fields: Any) -> dict[str, Any]:
    return {"at_s": 1, "kind": "plane_degradation", "target": "decode.0", "duration_s": 4, **fields}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({}, "nothing degrades"),
        ({"bandwidth_factor": 0}, "bandwidth_factor"),
        ({"bandwidth_factor": 1.5}, "bandwidth_factor"),
        ({"latency_factor": 0.5}, "latency_factor"),
        ({"plane": "nvlink", "bandwidth_factor": 0.5}, "plane"),
        ({"bandwidth_factor": 0.5, "duration_s": 0}, "duration_s"),
    ],
)
def test_a_plane_degradation_needs_a_plane_a_factor_and_a_window(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FaultsSpec.model_validate([_event(**fields)])


def test_the_degraded_step_is_the_cost_models_on_the_overridden_plane(inst: Instance) -> None:
    hw = inst.hw
    healthy = estimate(hw, inst.model, inst.dep).step.step_s
    sets = [f"{UB}.bw_gb_s_per_die=x0.5", f"{UB}.latency_us=x2", f"{UB}.latency_us_local=x2"]
    sets.append(f"{UB}.ep_comm.base_latency_us=x2")
    degraded = estimate(apply_hardware_overrides(hw, sets), inst.model, inst.dep).step.step_s
    fault = Fault(
        at_s=0, kind="plane_degradation", instance=0, dies=(), plane="ub", bandwidth_factor=0.5, latency_factor=2
    )
    rec = price(inst, fault, "elastic-ep")  # the policy is for losses: a slow plane loses nothing
    assert rec.policy == "none" and rec.cut == "none" and rec.pause_s == 0
    assert rec.step_factor == pytest.approx(degraded / healthy, rel=1e-12) and rec.step_factor > 1
    assert rec.degraded_fraction == pytest.approx(1 / rec.step_factor, rel=1e-12)


def test_less_bandwidth_or_more_latency_never_speeds_the_step(inst: Instance) -> None:
    by_bw = [plane_step_factor(inst, "ub", f, 1.0) for f in (0.9, 0.5, 0.25, 0.1)]
    by_lat = [plane_step_factor(inst, "ub", 1.0, f) for f in (1.5, 2.0, 4.0, 10.0)]
    assert by_bw == sorted(by_bw) and by_lat == sorted(by_lat) and by_bw[0] >= 1.0 and by_lat[0] >= 1.0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plane=st.sampled_from(["ub", "rdma", "vpc"]),
    bandwidth=st.floats(0.01, 1.0),
    latency=st.floats(1.0, 100.0),
)
def test_any_degradation_prices_a_finite_slower_step(
    inst: Instance, plane: str, bandwidth: float, latency: float
) -> None:
    factor = plane_step_factor(inst, plane, bandwidth, latency)
    assert math.isfinite(factor) and factor >= 1.0 - 1e-12


def test_planes_the_decode_step_does_not_cross_leave_it_unchanged(inst: Instance) -> None:
    """A decode step's collectives stay on the scale-up plane: RDMA and VPC carry KV hand-offs and loads."""
    assert plane_step_factor(inst, "rdma", 0.1, 10.0) == 1.0
    assert plane_step_factor(inst, "vpc", 0.1, 10.0) == 1.0


def test_a_system_without_the_plane_is_refused_by_name(inst: Instance) -> None:
    bare = Instance(load_hardware("gb200-nvl72"), inst.model, inst.dep)
    with pytest.raises(ConfigError, match="plane 'vpc': gb200-nvl72 has no storage plane"):
        plane_step_factor(bare, "vpc", 0.5, 1.0)


def test_a_degraded_plane_slows_the_run_for_its_window_and_cuts_nothing() -> None:
    healthy = simulate(_scenario([])).to_dict()
    event = _event(plane="ub", bandwidth_factor=0.1, latency_factor=4)
    sc = _scenario([event])
    d = simulate(sc).to_dict()
    f = d["faults"]
    (record,) = f["events"]
    assert f["requests"]["cut"] == 0 and f["requests"]["failed"] == 0
    assert record["kind"] == "plane_degradation" and record["pause_s"] == 0 and record["until_s"] == 5.0
    assert 0 < record["degraded_fraction"] < 1
    assert 0 < f["availability"] < 1
    assert d["tpot_ms"]["p99"] > healthy["tpot_ms"]["p99"] and d["e2e_ms"]["mean"] > healthy["e2e_ms"]["mean"]
    assert simulate(sc).to_dict()["faults"] == f  # the same run for the same seed
    _finite_non_negative({k: v for k, v in d.items() if k != "intervals"})


def test_the_scenario_refuses_a_degradation_with_nothing_degraded() -> None:
    with pytest.raises(ConfigError, match="nothing degrades"):
        _scenario([_event()])
