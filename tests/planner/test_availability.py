"""`plan --availability`: the closed form of each policy's expected availability (planner/availability.py)
checked against the catalog's rates and the priced pauses, Erlang's loss formula, the spare sizing and the
plan table's line."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.faults import fault_catalog, recovery_constants
from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cli.app import app
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.planner.availability import (
    HOURS_PER_MONTH,
    _Kind,
    _kinds,
    check_target,
    erlang_b,
    lost_s,
    pool_availability,
    redundant_experts_needed,
    spares_needed,
)
from cloudmatrix.sim.fault_spec import Fault
from cloudmatrix.sim.recovery import Instance, Recovery, price

runner = CliRunner()


@pytest.fixture(scope="module")
def inst() -> Instance:
    hw, model = load_hardware("cloudmatrix384"), load_model("deepseek-r1")
    dep = Deployment(
        phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=64, input_len=4096, output_len=256, precision="int8"
    )
    return Instance(hw, model, dep)


def _options(result: dict) -> dict:
    return {o["policy"]: o for o in result["options"]}


def test_erlang_b_matches_its_closed_form_for_one_and_two_servers() -> None:
    for a in (0.01, 0.5, 3.0):
        assert erlang_b(1, a) == pytest.approx(a / (1 + a), rel=1e-12)
        assert erlang_b(2, a) == pytest.approx(a * a / 2 / (1 + a + a * a / 2), rel=1e-12)
    assert erlang_b(0, 2.0) == 1.0


def test_restart_downtime_is_rate_times_dies_times_pause(inst: Instance) -> None:
    """Expected unavailability = (die rate x dies + node rate x nodes) x restart pause; one instance here."""
    rates = fault_catalog().rates
    die_per_hour = rates.accelerator_per_hour.value * rates.die_share_of_accelerator.value / 2  # per die
    per_hour = die_per_hour * 64 + rates.node_per_hour.value * 4  # 64 dies, 4 nodes of 8 NPUs
    pause = price(inst, Fault(at_s=0, kind="die_loss", instance=0, dies=(0,)), "restart").pause_s
    k = recovery_constants("ascend")
    assert pause > k.detect_s.value + k.engine_init_s.value
    restart = _options(pool_availability(inst, 1, 0.999))["restart"]
    assert restart["availability"] == pytest.approx(1 - per_hour * pause / 3600, rel=1e-9)
    assert restart["failures_per_month"] == pytest.approx(per_hour * HOURS_PER_MONTH, rel=1e-9)
    assert restart["downtime_min_per_month"] == pytest.approx(per_hour * pause / 60 * HOURS_PER_MONTH, rel=1e-9)
    assert restart["extra_chips"] == 0


def test_a_shrinking_policy_pays_its_degraded_stretch_until_repair(inst: Instance) -> None:
    fault = Fault(at_s=0, kind="die_loss", instance=0, dies=(0,))
    rec = price(inst, fault, "elastic-ep")
    assert rec.cut == "dies" and 0 < rec.degraded_fraction < 1
    expected = rec.pause_s + (1 - rec.degraded_fraction) * 1800.0 + rec.reintegration_pause_s
    assert lost_s(rec, 1800.0) == pytest.approx(expected, rel=1e-12)
    restart = price(inst, fault, "restart")
    assert lost_s(restart, 1800.0) == restart.pause_s


def test_spares_bring_the_pause_to_the_reroute_and_cost_whole_instances(inst: Instance) -> None:
    result = pool_availability(inst, 4, 0.9999)
    opts = _options(result)
    spare = opts["spare-instance"]
    assert spare["spares"] >= 1 and spare["extra_chips"] == spare["spares"] * 32 and spare["meets"]
    k = recovery_constants("ascend")
    floor = result["instance_failures_per_hour"] * (k.detect_s.value + k.reroute_s.value) / 3600
    assert 1 - spare["availability"] >= floor * (1 - 1e-9)  # never better than every failure rerouted
    assert spare["availability"] > opts["restart"]["availability"]


def test_spare_sizing_is_the_fewest_standbys_that_meet_the_target() -> None:
    """One failure an hour per instance, 10 instances, 30 min repairs: 5 Erlangs offered to the standbys; a
    rerouted failure costs 3 s, one that finds none restarts for 100 s."""
    kind = _Kind(
        1.0,
        {
            "spare-instance": Recovery(policy="spare-instance", parts_s={"reroute": 3.0}, cut="instance"),
            "restart": Recovery(policy="restart", parts_s={"restart": 100.0}, cut="instance"),
        },
    )

    def unavailable(s: int) -> float:
        b = erlang_b(s, 5.0)
        return ((1 - b) * 3.0 + b * 100.0) / 3600

    target = 0.999
    sized = spares_needed(10, [kind], 1800.0, target)
    assert sized is not None
    s, u = sized
    assert u == pytest.approx(unavailable(s), rel=1e-12) and 1 - u >= target
    assert s > 1 and 1 - unavailable(s - 1) < target


def test_more_instances_need_at_least_as_many_spares(inst: Instance) -> None:
    counts = [_options(pool_availability(inst, n, 0.99999))["spare-instance"]["spares"] for n in (1, 8, 64)]
    assert counts == sorted(counts)


def test_an_unreachable_target_says_so(inst: Instance) -> None:
    result = pool_availability(inst, 1, 0.999999999)
    assert "spare-instance" not in _options(result) and "no count of standby" in result["note"]
    assert spares_needed(1, [], 1800.0, 0.5) == (1, 0.0)  # no failures: one standby is already enough


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5, float("nan"), float("inf")])
def test_a_target_outside_zero_to_one_is_refused(bad: float) -> None:
    with pytest.raises(CloudMatrixError, match="--availability: got"):
        check_target(bad)


@pytest.mark.parametrize("bad", ["0", "1", "-0.1", "2", "nan"])
def test_the_cli_refuses_a_bad_target_in_one_line(bad: str) -> None:
    res = runner.invoke(app, ["plan", "--availability", bad, "--no-check"])
    assert res.exit_code == 2, res.output
    assert "--availability: got" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_availability_with_afd_is_refused_in_one_line() -> None:
    res = runner.invoke(app, ["plan", "--afd", "--availability", "0.999", "--no-check"])
    assert res.exit_code == 2 and "--availability: not with --afd" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_plan_lists_each_policy_beside_the_ranking() -> None:
    args = ["plan", "--precision", "int8", "--no-check", "--top", "1", "--availability", "0.999"]
    d = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    a = d["ranked"][0]["availability"]
    assert [o["policy"] for o in a["options"]] == ["restart", "redundant-experts", "elastic-ep", "spare-instance"]
    assert all(0 < o["availability"] < 1 and o["downtime_min_per_month"] > 0 for o in a["options"])
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "#1 availability (target 0.999, decode pool): restart" in table.stdout
    plain = json.loads(runner.invoke(app, ["plan", "--precision", "int8", "--no-check", "--top", "1", "--json"]).stdout)
    assert "availability" not in plain["ranked"][0]


def test_redundant_experts_are_sized_to_the_fewest_slots_that_leave_no_expert_lost(inst: Instance) -> None:
    """EP64 over 32 NPUs: a node loss takes 16 dies; with 5 slots per die (the default, 64 redundant) 80 slots
    go and 16 experts lose their last copy; 6 per die (128 redundant) cover 96 lost slots."""
    red = redundant_experts_needed(inst, 0.999, 1800.0)
    assert red["reachable"] and red["redundant_experts"] == 128 and red["slots_per_die"] == 6
    sized = Instance(inst.hw, inst.model, dataclasses.replace(inst.dep, redundant_experts=128))
    assert all(k.recoveries["redundant-experts"].experts_lost == 0 for k in _kinds(sized))
    fewer = Instance(inst.hw, inst.model, dataclasses.replace(inst.dep, redundant_experts=64))
    assert max(k.recoveries["redundant-experts"].experts_lost for k in _kinds(fewer)) == 16
    one_expert = inst.model.expert_params() * inst.model.num_moe_layers  # INT8: a byte a weight
    assert red["extra_hbm_gb_per_die"] == pytest.approx(one_expert / 1e9)
    assert red["chip_equivalent"] == pytest.approx(one_expert * 32 / inst.hw.chip.hbm_bytes_per_die)
    assert red["step_ratio"] > 1.0  # each die reads one more expert's weights a step
    assert red["availability"] >= 0.999
    assert pool_availability(inst, 1, 0.999)["redundant_experts"] == red


def test_a_target_redundancy_cannot_meet_says_why(inst: Instance) -> None:
    assert not redundant_experts_needed(inst, 0.9999999, 1800.0)["reachable"]
    wide = dataclasses.replace(inst.dep, num_chips=160, ep=320)
    note = redundant_experts_needed(Instance(inst.hw, inst.model, wide), 0.999, 1800.0)
    assert not note["reachable"] and "one expert per die" in note["note"]


def test_plan_prints_the_redundancy_line() -> None:
    args = ["plan", "--precision", "int8", "--no-check", "--top", "1", "--availability", "0.999"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "#1 redundant experts for the target:" in table.stdout
