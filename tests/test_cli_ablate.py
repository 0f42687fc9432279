"""End-to-end CLI runs for issue 5: `ablate`, and the expert-routing and EMS flags of `estimate`."""

import json

import pytest
from typer.testing import CliRunner

from cloudmatrix.cli.app import app

runner = CliRunner()
PREFILL = ["estimate", "--phase", "prefill", "--chips", "16", "--ep", "32", "--tokens-per-chip", "16384"]
DECODE = ["estimate", "--chips", "160", "--ep", "320", "--batch-per-chip", "96", "--kv-len", "4096"]


def _json(args: list[str]) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_ablate_contract_and_table() -> None:
    d = _json(["ablate"])
    rows = {(r["phase"], r["optimisation"]): r for r in d["rows"]}
    assert len(rows) == 9
    ems = rows["prefill", "EMS context cache (50 % reuse)"]
    assert ems["throughput_gain_pct"] > 30 and ems["latency_change_pct"] < -20
    assert rows["prefill", "EMS over UB (instead of VPC)"]["throughput_gain_pct"] > 0
    assert rows["decode", "INT8 weights and dispatch"]["throughput_gain_pct"] > 0
    assert rows["prefill", "microbatch pipeline (SDMA overlap)"]["throughput_gain_pct"] > 0
    infeasible = [r for r in d["rows"] if r["throughput_off"] is None]
    assert all("GB HBM per die" in r["note"] for r in infeasible)
    table = runner.invoke(app, ["ablate"])
    assert table.exit_code == 0 and "microbatch pipeline" in table.stdout


def test_eplb_modes_order_the_prefill_throughput() -> None:
    tput = {e: _json([*PREFILL, "--eplb", e])["throughput_per_chip_tok_s"] for e in ("perfect", "default", "none")}
    assert tput["perfect"] > max(tput["default"], tput["none"])
    # DeepSeek's routing popularity is uniform: EPLB's placement has nothing to balance, so default and none
    # differ only by the seeded sampling (a measured imbalance without EPLB is issue 23's item 6)
    assert tput["default"] == pytest.approx(tput["none"], rel=0.005)
    skew = _json([*PREFILL, "--eplb", "none", "--routing", "zipf:1.0"])["throughput_per_chip_tok_s"]
    balanced = _json([*PREFILL, "--eplb", "default", "--routing", "zipf:1.0"])["throughput_per_chip_tok_s"]
    assert skew < balanced


def test_cached_prefix_speeds_prefill_and_ub_beats_vpc() -> None:
    base = _json(PREFILL)
    ub = _json([*PREFILL, "--cached-fraction", "0.5"])
    vpc = _json([*PREFILL, "--cached-fraction", "0.5", "--cache-plane", "vpc"])
    assert ub["tokens_per_chip"] == base["tokens_per_chip"] == 16384
    assert ub["batch_time_ms"] < vpc["batch_time_ms"] < base["batch_time_ms"]
    assert ub["breakdown_us"]["ems_kv_load"] < vpc["breakdown_us"]["ems_kv_load"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [*PREFILL, "--cached-fraction", "1.5"],
            "cached_fraction (--cached-fraction): got 1.5; expected a number >= 0 and <= 1",
        ),
        ([*PREFILL, "--cache-plane", "nvlink"], "cache plane 'nvlink' is not one of: ub, vpc"),
        ([*DECODE, "--routing", "pareto"], "routing 'pareto': expected uniform, zipf"),
        ([*DECODE, "--routing", "zipf:-1"], "zipf_exponent must be >= 0"),
        ([*DECODE, "--eplb", "greedy"], "eplb 'greedy' is not one of"),
    ],
)
def test_bad_routing_and_cache_input(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_estimate_reports_the_expert_load() -> None:
    d = _json([*PREFILL, "--eplb", "default"])
    load = d["expert_load"]
    assert load["eplb"] == "default" and load["routing"].startswith("uniform@c=")
    assert 1.0 < load["busiest_over_mean"] < 1.5
    assert _json([*PREFILL, "--eplb", "perfect"])["expert_load"]["busiest_over_mean"] == 1.0
    table = runner.invoke(app, [*PREFILL, "--eplb", "default"])
    assert "busiest expert die / mean" in table.stdout
