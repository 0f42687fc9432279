"""`cloudmatrix plan` end to end through Typer's runner: the JSON contract, the Pareto PNG, the written
scenario run by `simulate` as is, what-if overrides and one-line errors (exit 2)."""

import json

import pytest
from typer.testing import CliRunner

from cloudmatrix.cli.app import app

runner = CliRunner()
PLAN = ["plan", "--system", "cloudmatrix384", "--model", "deepseek-r1", "--workload", "4k-256"]
FAST = ["--ttft-slo", "5000", "--tpot-slo", "50", "--precision", "int8"]


def _json(args: list[str]) -> dict:
    res = runner.invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_plan_json_png_and_scenario_round_trip(tmp_path) -> None:
    png, scenario = tmp_path / "pareto.png", tmp_path / "plan.yaml"
    d = _json([*PLAN, *FAST, "--top", "2", "--plot", str(png), "--write-scenario", str(scenario)])
    assert {"ranked", "pareto", "best_decode", "search", "timing_s", "candidates_per_s", "why_empty"} <= set(d)
    assert d["search"]["enumerated"] >= 1000 and len(d["ranked"]) == 2 and d["why_empty"] == ""
    assert d["timing_s"]["costing"] <= d["timing_s"]["fast_path"]
    best = d["ranked"][0]
    assert best["tpot_ms"] <= 50 and best["ttft_ms"] <= 5000 and best["check"]["simulated"]
    assert best["check"]["analytic"]["tpot_ms"] == best["tpot_operating_ms"]  # what the table shows as TPOT op
    assert d["best_decode"]["tok_s_per_chip"] >= 1943
    # a front point names its deployment: an index into the search's deployments, and the deployment itself
    assert best["deployment"] in {p["deployment"] for p in d["pareto"]}
    assert all({"prefill", "decode", "chips", "rate_req_s"} <= set(p) for p in d["pareto"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sim = _json(["simulate", str(scenario)])  # the written scenario runs as is: the check's run, exactly
    run = best["check"]["run"]
    assert json.dumps({k: sim[k] for k in run}) == json.dumps(run)


def test_plan_table_and_what_if_overrides() -> None:
    res = runner.invoke(
        app, [*PLAN, *FAST, "--top", "1", "--chips", "128", "--set", "system.planes.scale_up.bw_gb_s_per_die=x2"]
    )
    assert res.exit_code == 0, res.output
    assert "best decode instance" in res.stdout and "checks skipped" in res.stdout
    assert "TPOT@cap" in res.stdout and "check" in res.stdout


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--chips", "8"], "smallest prefill+decode pair needs 8 + 16 = 24 chips > 8"),
        (["--tpot-slo", "1", "--chips", "64"], "fastest decode candidate has TPOT "),
    ],
)
def test_empty_plan_says_why(args, why) -> None:
    d = _json([*PLAN, "--precision", "int8", "--no-check", *args])
    assert d["ranked"] == [] and why in d["why_empty"]
    res = runner.invoke(app, [*PLAN, "--precision", "int8", "--no-check", *args])
    assert res.exit_code == 0 and "no deployment within the SLOs" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workload", "nope"], "workload 'nope'"),
        (["--chips", "1000"], "--chips: got 1000"),
        (["--system", "nope"], "nope"),
        (["--precision", "fp16"], "precision 'fp16'"),
        (["--top", "0"], "--top"),
        (["--chips", "0"], "--chips: got 0"),
        (["--tpot-slo", "0"], "--tpot-slo (ms): got 0"),
        (["--mtp-acceptance", "1.5"], "--mtp-acceptance: got 1.5"),
        (["--ray-cpus", "0"], "--ray-cpus: got 0; expected 1 to"),
        (["--ray-address", "nope"], "cannot start or reach the Ray cluster at nope"),
        (["--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
        (["--set", "chip.die.hbm_bw_gb_s=0"], "'chip.die.hbm_bw_gb_s' expects a positive number"),
        (["--set", "system.planes.scale_out.bw_gb_s_per_die=0"], "expects a positive number"),
        (["--set", "system.chips_per_node=0"], "'system.chips_per_node' expects a positive number"),
    ],
)
def test_plan_errors_are_one_line(args, message) -> None:
    res = runner.invoke(app, [*PLAN, *args, "--no-check"])
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_dense_model_plans_with_tensor_parallelism() -> None:
    """Llama 3.1 405B fits no die whole: the plan splits it over tensor-parallel groups in both roles."""
    d = _json([*PLAN, "--model", "llama-3.1-405b", "--precision", "int8", "--no-check", "--top", "3"])
    assert d["ranked"], d.get("why_empty")
    for r in d["ranked"]:
        assert r["prefill"]["tp"] > 1 and r["decode"]["tp"] > 1 and r["decode"]["ep"] is None
    assert d["best_decode"]["tp"] > 1


def test_the_check_column_and_notes_say_what_a_user_needs() -> None:
    from cloudmatrix.cli.plan_render import _verdict, interval_caption

    check = {"flagged": ["ttft_ms"], "error_pct": {"ttft_ms": 21.6, "tpot_ms": -3.2}, "steady": True, "slice": None}
    assert _verdict(check) == "TTFT +22%" and _verdict(None) == "-"
    sliced = check | {"flagged": [], "slice": {"prefill_instances": 23, "decode_instances": 2}, "steady": False}
    assert _verdict(sliced) == "ok (slice 23P+2D) (not steady)"
    why = "no validation data (fewer than 8 predicted rows)"
    ivs = {
        "output_tok_s_per_chip": {"lo": None, "note": why},
        "tpot_ms": {"lo": 17.7, "hi": 24.9, "coverage": 0.8, "stratum": "blackwell"},
        "ttft_ms": {"lo": None, "note": why},
    }
    assert interval_caption(ivs) == f"TPOT 17.7–24.9 (80%, blackwell); tok/s, TTFT: {why}"  # the reason once
