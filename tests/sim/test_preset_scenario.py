"""`simulate --system S --model M --workload W`: the system's preset as a scenario (compare's pools and
decode batch, the system filled, 90 % of the binding pool offered), refusals naming the pool, and goodput
as the rate of requests served within their SLOs over the arrivals (documented in docs/simulate.md)."""

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.cli.app import main
from cloudmatrix.estimate import pool_req_s
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import load_scenario, scenario_from
from cloudmatrix.studies.compare import Conditions, compare_system
from cloudmatrix.studies.preset_scenario import LOAD, preset_scenario

COND = Conditions(model="deepseek-r1", input_len=2048, output_len=2048, tpot_slo_ms=50)


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("system", ["gb200-nvl72", "cloudmatrix384", "hgx-h800"])
def test_preset_scenario_is_compares_operating_point(system: str) -> None:
    d = preset_scenario(system, COND)
    r = compare_system(system, COND)
    total = load_hardware(system).system.num_chips
    p, dec = d["prefill"], d["decode"]
    assert dec["batch_per_chip"] == r.batch_per_chip and d["precision"] == r.precision
    assert p["instances"] * p["chips"] + dec["instances"] * dec["chips"] <= total
    mu_p = pool_req_s(r.prefill_tok_s_per_chip * p["chips"], 2048, "prefill")
    mu_d = pool_req_s(r.decode_tok_s_per_chip * dec["chips"], 2048, "decode")
    capacity = min(p["instances"] * mu_p, dec["instances"] * mu_d)
    assert d["workload"]["arrivals"]["rate_per_s"] == pytest.approx(LOAD * capacity, abs=1e-3)
    # no other whole-instance split of the system serves more
    for n_d in range(1, total // dec["chips"] + 1):
        n_p = (total - n_d * dec["chips"]) // p["chips"]
        if n_p >= 1:
            assert min(n_p * mu_p, n_d * mu_d) <= capacity * (1 + 1e-12)
    scenario_from(d, [], "preset")  # a valid scenario


def test_simulate_points_at_a_system_with_no_scenario_file() -> None:
    """The issue's acceptance: `simulate --system gb200-nvl72 --model deepseek-r1 --workload 2048/2048`."""
    args = ["simulate", "--system", "gb200-nvl72", "--model", "deepseek-r1", "--workload", "2048/2048"]
    code, out, err = _run([*args, "--set", "requests=400", "--json"])
    assert code == 0, err
    d = json.loads(out)
    assert d["scenario"] == "gb200-nvl72-2k-2k" and d["system"] == "gb200-nvl72" and d["num_requests"] == 400
    code, out, _ = _run(["simulate", "gb200-nvl72", "--workload", "2048/2048", "--set", "requests=400", "--json"])
    assert code == 0 and json.loads(out)["ttft_ms"] == d["ttft_ms"]  # a built-in scenario per preset


@pytest.mark.parametrize(
    ("args", "pool"),
    [
        (["--system", "hgx-h100", "--model", "llama-3.1-405b"], "hgx-h100: decode pool (72 chips EP72): "),
        (["--set", "decode.batch_per_chip=5000"], "decode pool (1 x 160 chips EP320): deployment does not fit"),
        (["--set", "prefill.tokens_per_chip=9000000"], "prefill pool (6 x 16 chips EP32): deployment does not fit"),
    ],
)
def test_refusals_name_the_pool(args: list[str], pool: str) -> None:
    code, out, err = _run(["simulate", *args])
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith(f"error: {pool}")


def test_flags_that_build_a_preset_are_refused_beside_a_scenario_file() -> None:
    code, _, err = _run(["simulate", "cm384-paper", "--system", "gb200-nvl72"])
    assert code == 2 and "--set" in err


def _met(d: dict) -> int:
    return round(d["slo_attainment"] * d["num_arrived"])


def test_goodput_is_the_met_requests_over_the_arrivals() -> None:
    """All within SLO: goodput is the offered rate measured over the arrivals, not diluted by the drain
    after the last one (2K/2K: a request lifetime of about a minute)."""
    s = scenario_from(preset_scenario("gb200-nvl72", COND), ["requests=2000"], "preset")
    result = simulate(s)
    d = result.to_dict()
    last_arrival = float(np.nanmax(result.table.arrival_s))
    assert d["slo_attainment"] == 1.0 and d["sim_time_s"] > last_arrival + 20
    assert d["goodput_req_s"] == pytest.approx(2000 / last_arrival, rel=1e-12)
    offered = s.workload.arrivals.rate_per_s
    assert d["goodput_req_s"] == pytest.approx(offered, rel=0.05)


@pytest.mark.parametrize("overrides", [["duration_s=20"], ["slo.tpot_ms=5"], ["slo.ttft_ms=300"], []])
def test_attainment_counts_unfinished_requests_as_missed(overrides: list[str]) -> None:
    s = load_scenario("cm384-paper", ["requests=1500", *overrides])
    result = simulate(s)
    d = result.to_dict()
    ttft, tpot = result.ttft_s(), result.tpot_s()
    met = int(np.sum((ttft <= s.slo.ttft_ms / 1e3) & (tpot <= s.slo.tpot_ms / 1e3)))
    assert d["slo_attainment"] == pytest.approx(met / d["num_arrived"])
    arrived = result.table.arrival_s[result.table.state >= 0]
    assert d["goodput_req_s"] == pytest.approx(met / float(arrived.max()))
    assert d["num_requests"] <= d["num_arrived"]
