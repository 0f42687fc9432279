"""Faults beyond a disaggregated decode instance (issue 27): prefill instances, aggregated (co-located)
pools, KV loss, KV migration to a standby, and a node's CPU and SSD (the EMS tiers they hold); the same
invariants as on decode (nothing lost uncounted, finite figures, deterministic)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cloudmatrix.serving.ems import ContextCache
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.engine import Simulation, simulate
from cloudmatrix.sim.fault_spec import POLICIES
from cloudmatrix.sim.scenario import load_scenario, scenario_from
from tests.sim.test_faults import _finite_non_negative, _scenario


def _event(kind: str, target: str, at_s: float = 3.0, **more: Any) -> dict[str, Any]:
    return {"at_s": at_s, "kind": kind, "target": target, **more}


def _run(faults: dict[str, Any], **extra: Any) -> tuple[Simulation, dict[str, Any]]:
    sim = Simulation(_scenario(faults, **extra))
    return sim, sim.run().to_dict()


def _accounted(sim: Simulation, d: dict[str, Any]) -> None:
    states = sim.table.state[: len(sim.table)]
    done, failed = int((states == State.DONE).sum()), int((states == State.CANCELLED).sum())
    counts = d["faults"]["requests"]
    assert done + failed == len(sim.table)
    assert failed == counts["failed"] and counts["cut"] == counts["retried"] + counts["failed"]
    _finite_non_negative({k: v for k, v in d.items() if k != "intervals"})


def test_a_prefill_crash_cuts_its_batch_routes_its_queue_and_serves_nothing_in_its_pause() -> None:
    sim, d = _run({"events": [_event("instance_crash", "prefill.0")], "policy": "restart"})
    e = d["faults"]["events"][0]
    assert e["pool"] == "prefill" and e["pause_s"] > 80 and e["cut"] > 0
    _accounted(sim, d)
    starts = np.array([row[1] for row in sim.rec.prefill_batches if row[0] == 0])
    assert not np.any((starts > e["at_s"]) & (starts < e["resume_at_s"]))  # held: no batch starts
    others = np.array([row[1] for row in sim.rec.prefill_batches if row[0] == 1])
    assert np.any((others > e["at_s"]) & (others < e["resume_at_s"]))  # the other instance takes the work
    assert d["faults"]["availability"] == 1.0  # the decode pool lost nothing


def test_a_prefill_die_loss_under_elastic_ep_runs_slower_until_the_repair() -> None:
    faults = {"events": [_event("die_loss", "prefill.1.die.4")], "policy": "elastic-ep", "repair_s": 3}
    sim, d = _run(faults, requests=1500)
    e = d["faults"]["events"][0]
    assert e["degraded_fraction"] == pytest.approx(31 / 32)
    assert e["full_capacity_at_s"] == pytest.approx(e["resume_at_s"] + 3 + e["reintegration_pause_s"])
    assert sim.faults is not None and sim.faults.prefill_factor == [1.0, 1.0]  # back to full speed
    _accounted(sim, d)


def test_kv_loss_cuts_the_dies_sequences_and_holds_nothing() -> None:
    sim, d = _run({"events": [_event("kv_loss", "decode.0.die.5")], "policy": "restart"})
    e = d["faults"]["events"][0]
    assert e["pause_s"] == 0 and e["cut"] > 0 and e["dies"] == 1
    assert not sim.decodes[0].fenced.any()
    whole = _run({"events": [_event("kv_loss", "decode.0")]})[1]["faults"]["events"][0]
    assert whole["dies"] == 32 and whole["cut"] > 10 * e["cut"]


def test_a_failover_migrates_the_surviving_kv_and_resubmits_only_the_lost_dies() -> None:
    loss = [_event("npu_loss", "decode.0.die.5")]
    sim_m, moved = _run({"events": loss, "policy": "spare-instance", "requests": "migrate"})
    sim_r, again = _run({"events": loss, "policy": "spare-instance", "requests": "retry"})
    m, r = moved["faults"]["events"][0], again["faults"]["events"][0]
    # cut: the lost dies' sequences and the hand-offs landing during the pause (as with retry)
    assert 0 < m["migrated"] <= r["cut"] and m["cut"] < r["cut"]
    assert 0 < m["migration_s"] < 5  # KV of ~1K-token sequences over RDMA

    def kept(sim: Simulation, e: dict[str, Any]) -> int:  # first token before the fault, done after the move
        t, n = sim.table, len(sim.table)
        back = e["resume_at_s"] + e.get("migration_s", 0.0)
        ok = (t.first_token_s[:n] < e["at_s"]) & (t.finish_s[:n] > back) & (t.state[:n] == State.DONE)
        return int(ok.sum())

    assert kept(sim_m, m) == m["migrated"] and kept(sim_r, r) == 0  # they decode on where they were
    assert moved["faults"]["requests"]["migrated"] == m["migrated"]


def test_migrate_without_a_standby_resubmits_as_retry_does() -> None:
    loss = [_event("npu_loss", "decode.0.die.5")]
    a = _run({"events": loss, "policy": "restart", "requests": "migrate"})[1]["faults"]
    b = _run({"events": loss, "policy": "restart", "requests": "retry"})[1]["faults"]
    assert a["requests"]["migrated"] == 0 and a["events"][0]["cut"] == b["events"][0]["cut"]


def test_an_aggregated_pool_fails_holds_and_recovers() -> None:
    sc = load_scenario("h200-colocated")
    data = sc.model_dump(mode="json", exclude_none=True) | {"requests": 200, "seed": 2}
    data["aggregated"]["tp"] = 1  # faults need data-parallel attention
    data["aggregated"]["ep"] = 8
    data["aggregated"]["moe_tp"] = 1
    data["faults"] = {"events": [_event("npu_loss", "aggregated.1.die.3", at_s=20)], "policy": "restart"}
    sim = Simulation(scenario_from(data, None, "test"))
    d = sim.run().to_dict()
    e = d["faults"]["events"][0]
    assert e["pool"] == "decode" and e["cut"] > 0 and e["pause_s"] > 100
    steps = np.array([row[1] for row in sim.rec.decode_steps if row[0] == 1])
    assert not np.any((steps > e["at_s"] + 1) & (steps < e["resume_at_s"]))
    _accounted(sim, d)


def test_a_cpu_loss_takes_its_node_and_its_ems_dram_and_an_ssd_its_tier_share() -> None:
    sc = load_scenario("cm384-ems")
    data = sc.model_dump(mode="json", exclude_none=True) | {"requests": 3000, "duration_s": 40}
    data["ems"]["ssd"] = True
    data["faults"] = {
        "events": [_event("cpu_loss", "decode.0.die.40", at_s=20), _event("ssd_loss", "decode.0", at_s=25)],
        "policy": "elastic-ep",
    }
    d = simulate(scenario_from(data, None, "test")).to_dict()["faults"]["events"]
    cpu, ssd = d
    assert cpu["dies"] == 16 and cpu["ems_dram_blocks_lost"] > 0
    assert ssd["pause_s"] == 0 and ssd["cut"] == 0 and "ems_ssd_blocks_lost" in ssd
    plain = _run({"events": [_event("ssd_loss", "decode.0")]})[1]["faults"]["events"][0]
    assert "no EMS" in plain["note"]


def test_a_tier_loses_a_share_of_its_blocks_and_capacity_and_gets_the_capacity_back() -> None:
    cache = ContextCache(dram_blocks=100, ssd_blocks=0)
    cache.store(list(range(100)))
    taken = cache.drop_share("dram", 0.25)
    assert taken == 25 and cache.dram_capacity_blocks == 75 and len(cache) == 75
    cache.restore_capacity("dram", taken)
    assert cache.dram_capacity_blocks == 100


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(POLICIES),
    kind=st.sampled_from(["die_loss", "node_loss", "instance_crash", "straggler", "kv_loss", "cpu_loss"]),
    pool=st.sampled_from(["decode", "prefill"]),
    mode=st.sampled_from(["retry", "fail", "migrate"]),
    at_s=st.floats(0.0, 8.0),
    seed=st.integers(0, 50),
)
def test_no_request_is_lost_uncounted_whatever_the_pool_kind_and_handling(
    policy: str, kind: str, pool: str, mode: str, at_s: float, seed: int
) -> None:
    assume(not (pool == "prefill" and kind == "kv_loss"))
    faults = {"events": [_event(kind, f"{pool}.1.die.5" if pool == "prefill" else "decode.0.die.5", at_s)]}
    sim, d = _run(faults | {"policy": policy, "requests": mode, "repair_s": 4}, seed=seed)
    _accounted(sim, d)
    assert 0.0 <= d["faults"]["availability"] <= 1.0
