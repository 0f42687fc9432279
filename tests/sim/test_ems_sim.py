"""The EMS context cache inside the simulation: hit rates match the workload's reuse, hits shorten prefill
and TTFT, UB beats VPC, and the cache stays within its capacity throughout."""

import pytest

from cloudmatrix.errors import ConfigError
from cloudmatrix.sim.engine import Simulation, simulate
from cloudmatrix.sim.scenario import load_scenario

SMALL = ["prefill.instances=2", "decode.chips=16", "decode.ep=32", "requests=600", "workload.arrivals.rate_per_s=30"]


def _run(name: str, sets: list[str]) -> dict:
    return simulate(load_scenario(name, [*SMALL, *sets])).to_dict()


@pytest.mark.parametrize("fraction", [0.125, 0.5, 0.875])
def test_token_hit_rate_matches_the_reuse(fraction: float) -> None:
    d = _run("cm384-ems", [f"workload.reuse.fraction={fraction}"])
    groups, n = 16, 600
    expected = fraction * (n - groups) / n  # the first prompt of each group finds nothing
    assert d["ems"]["token_hit_rate"] == pytest.approx(expected, abs=0.02)


def test_cache_shortens_ttft_and_ub_beats_vpc() -> None:
    base = _run("cm384-paper", [])
    ub = _run("cm384-ems", [])
    vpc = _run("cm384-ems", ["ems.plane=vpc"])
    assert ub["ttft_ms"]["mean"] < vpc["ttft_ms"]["mean"] < base["ttft_ms"]["mean"]


def test_cache_stays_within_capacity_and_is_deterministic() -> None:
    seen = []

    def check(sim: Simulation) -> None:
        assert sim.ems is not None
        c = sim.ems.cache
        assert c.dram_used_blocks <= c.dram_capacity_blocks and c.ssd_used_blocks <= c.ssd_capacity_blocks
        seen.append(len(c))

    # eviction itself is unit-tested in tests/serving/test_ems.py; here the bounds hold inside a run
    sc = load_scenario("cm384-ems", [*SMALL, "ems.nodes=1", "workload.reuse.groups=400"])
    Simulation(sc, observer=check).run()
    assert seen and max(seen) > 0
    assert simulate(sc).to_dict() == simulate(sc).to_dict()


def test_ems_needs_a_prefill_pool() -> None:
    with pytest.raises(ConfigError, match="context cache serves a prefill pool"):
        load_scenario("h200-colocated", ["ems.plane=ub"])


def test_trace_replay_hits_match_a_prefix_count() -> None:
    """Mooncake hash_ids through the cache: at a low rate every earlier prompt has been stored before the
    next arrives, so each prompt hits its longest prefix shared with any earlier one (512-token blocks)."""
    import json
    from pathlib import Path

    trace = Path(__file__).resolve().parents[1] / "data" / "mooncake_sample.jsonl"
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    seen: set[int] = set()
    expected = 0
    for r in rows:
        lead = 0
        for h in r["hash_ids"]:
            if h not in seen:
                break
            lead += 1
        expected += min(lead * 512, r["input_length"] - 1)
        seen.update(r["hash_ids"])
    total = sum(r["input_length"] for r in rows)
    d = _run("cm384-ems", [f"workload.trace={trace}", "workload.reuse=null", "workload.time_scale=20", "requests=300"])
    assert d["ems"]["token_hit_rate"] == pytest.approx(expected / total, abs=1e-9)
    assert expected > 0
