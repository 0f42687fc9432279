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
    assert {"ranked", "pareto", "best_decode", "search", "timing_s", "candidates_per_s"} <= set(d)
    assert d["search"]["enumerated"] >= 1000 and len(d["ranked"]) == 2
    best = d["ranked"][0]
    assert best["tpot_ms"] <= 50 and best["ttft_ms"] <= 5000 and best["check"]["simulated"]
    assert d["best_decode"]["tok_s_per_chip"] >= 1943
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sim = _json(["simulate", str(scenario)])  # the written scenario runs as is
    run = best["check"]["run"]
    assert sim["tpot_ms"]["mean"] == pytest.approx(run["tpot_ms"]["mean"], rel=0.03)
    assert sim["ttft_ms"]["mean"] == pytest.approx(run["ttft_ms"]["mean"], rel=0.03)
    assert sim["throughput_per_chip_tok_s"]["decode"] == pytest.approx(
        run["throughput_per_chip_tok_s"]["decode"], rel=0.03
    )


def test_plan_table_and_what_if_overrides() -> None:
    res = runner.invoke(
        app, [*PLAN, *FAST, "--top", "1", "--chips", "128", "--set", "system.planes.scale_up.bw_gb_s_per_die=x2"]
    )
    assert res.exit_code == 0, res.output
    assert "best decode instance" in res.stdout and "checks skipped" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workload", "nope"], "workload 'nope'"),
        (["--chips", "1000"], "--chips 1000"),
        (["--system", "nope"], "nope"),
        (["--precision", "fp16"], "precision 'fp16'"),
        (["--top", "0"], "--top"),
    ],
)
def test_plan_errors_are_one_line(args, message) -> None:
    res = runner.invoke(app, [*PLAN, *args, "--no-check"])
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
