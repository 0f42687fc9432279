"""The verdict, the TCO and power model and the sweep: exact recomputation from the catalog's inputs, the
verdict's ratios equal to compare's figures, interval propagation, overrides, and the sweep's marked cells."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.tco import load_tco
from cloudmatrix.cli.app import app
from cloudmatrix.errors import ConfigError
from cloudmatrix.studies.sweep import OVER_CONTEXT, SweepRequest, marks, sweep
from cloudmatrix.studies.tco import economics, plan_economics, power_model, system_hardware
from cloudmatrix.studies.verdict import TOO_CLOSE, ratio_interval, verdict

runner = CliRunner()
PAIR = ("cloudmatrix384", "gb200-nvl72")
ARGS = ["compare", "--model", "deepseek-r1", "--workload", "2048/2048", "--tpot-slo", "50", "--systems", ",".join(PAIR)]


@pytest.fixture(scope="module")
def compared() -> dict:
    res = runner.invoke(app, [*ARGS, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_gb200_cost_and_energy_per_token_by_hand() -> None:
    """GB200 NVL72 at half load serving 1,000 output tok/s, from the numbers in tco.yaml and gb200-nvl72.yaml."""
    e = economics(load_hardware("gb200-nvl72"), load_tco(), 1000.0, 0.5)
    # 72 GPUs x 1,200 W from 20 % idle to TDP; the rest of the 145 kW all-in (CPUs, NVLink, remainder) is fixed
    draw_w = 145_000 - 72 * 1200 * (1 - 0.2) * (1 - 0.5)
    assert e["power_kw"] == pytest.approx(draw_w / 1e3, rel=1e-12)
    assert e["j_per_token"] == pytest.approx(draw_w / 1000.0, rel=1e-12)
    capital = 2_700_000 / (5 * 8766)
    hosting = 1 * 1500 * 12 / 8766
    energy = draw_w / 1e3 * 1.3 * 0.08
    assert e["usd_per_mtok"] == pytest.approx((capital + hosting + energy) / 3.6, rel=1e-12)
    assert e["usd_per_mtok_cloud"] == pytest.approx(4.54 * 72 / 3.6, rel=1e-12)
    assert e["output_tok_s_per_mw"] == pytest.approx(1000.0 / (draw_w * 1.3 / 1e6), rel=1e-12)


def test_every_power_breakdown_fits_its_all_in_power() -> None:
    tco = load_tco()
    for system in tco.systems:
        pm = power_model(load_hardware(system), tco)
        assert pm is not None and pm.fixed_w >= 0, system
        assert pm.draw_w(1.0) == pytest.approx(load_hardware(system).system.power_kw.value * 1e3)


def test_compare_json_economics_recompute_from_its_own_figures(compared) -> None:
    for row in compared["systems"]:
        e = economics(load_hardware(row["system"]), load_tco(), row["output_tok_s_per_system"], row["utilisation"])
        assert row["economics"] == pytest.approx(e)
        assert 0 < row["utilisation"] <= 1


def test_verdict_ratios_equal_the_table_figures(compared) -> None:
    v = compared["verdict"]
    rows = {r["system"]: r for r in compared["systems"]}
    a, b = rows[v["a"]], rows[v["b"]]
    assert (v["a"], v["b"]) == PAIR
    expected = {
        "output_tok_s_per_chip": a["output_tok_s_per_chip"] / b["output_tok_s_per_chip"],
        "output_tok_s_per_system": a["output_tok_s_per_system"] / b["output_tok_s_per_system"],
        "output_tok_s_per_kw": a["output_tok_s_per_kw"] / b["output_tok_s_per_kw"],
        "output_tok_s_per_musd": a["output_tok_s_per_musd"] / b["output_tok_s_per_musd"],
        "economics.usd_per_mtok": a["economics"]["usd_per_mtok"] / b["economics"]["usd_per_mtok"],
    }
    assert {r["figure"]: r["ratio"] for r in v["ratios"]} == pytest.approx(expected, rel=1e-12)
    for r in v["ratios"]:
        better_a = (r["ratio"] > 1) == r["higher_is_better"]
        assert r["lo"] is None or r["lo"] > 1 or r["hi"] < 1 or r["winner"] == TOO_CLOSE
        if r["lo"] is None:
            assert r["winner"] == (v["a"] if better_a else v["b"])


def test_verdict_block_printed() -> None:
    res = runner.invoke(app, ARGS)
    assert res.exit_code == 0, res.output
    assert "verdict: cloudmatrix384 (A) against gb200-nvl72 (B)" in res.stdout
    assert "$ per million tokens" in res.stdout


def test_ratio_interval_combines_independent_sides_at_the_extremes() -> None:
    assert ratio_interval((0.8, 1.25), (0.9, 1.1), 2.0, True) == pytest.approx((2 * 0.8 / 1.1, 2 * 1.25 / 0.9))
    # a cost goes as one over throughput: its relative interval is the throughput's inverted
    assert ratio_interval((0.8, 1.25), (0.9, 1.1), 2.0, False) == pytest.approx((2 * 0.8 / (1 / 0.9), 2 * 1.25 * 1.1))
    assert ratio_interval(None, (0.9, 1.1), 2.0, True) == (None, None)


def _row(system: str, per_chip: float, lo: float | None, hi: float | None) -> dict:
    iv = {"output_tok_s_per_chip": {"lo": lo, "hi": hi}}
    figures = dict.fromkeys(("output_tok_s_per_system", "output_tok_s_per_kw", "output_tok_s_per_musd"), per_chip)
    return {"system": system, "feasible": True, "output_tok_s_per_chip": per_chip, "intervals": iv,
            "economics": {"usd_per_mtok": 1 / per_chip}} | figures  # fmt: skip


def test_an_interval_spanning_one_is_too_close_to_call() -> None:
    v = verdict([_row("x", 110, 90, 130), _row("y", 100, 80, 120)], ("x", "y"))
    assert v is not None and {r["winner"] for r in v["ratios"]} == {TOO_CLOSE}
    v = verdict([_row("x", 300, 280, 320), _row("y", 100, 90, 110)], ("x", "y"))
    assert v is not None and [r["winner"] for r in v["ratios"]] == ["x"] * 5  # x cheaper per token too
    assert verdict([_row("x", 1, None, None)], ("x", "y")) is None


@pytest.mark.parametrize(
    ("assignment", "field"),
    [("tco.kwh_usd=0.16", "energy_usd_h"), ("gb200-nvl72:system.price_usd=5400000", "capital_usd_h")],
)
def test_set_overrides_move_the_cost(compared, assignment: str, field: str) -> None:
    res = runner.invoke(app, [*ARGS, "--json", "--set", assignment])
    assert res.exit_code == 0, res.output
    after = {r["system"]: r["economics"] for r in json.loads(res.stdout)["systems"]}
    before = {r["system"]: r["economics"] for r in compared["systems"]}
    assert after["gb200-nvl72"][field] == pytest.approx(2 * before["gb200-nvl72"][field])
    assert after["gb200-nvl72"]["usd_per_mtok"] > before["gb200-nvl72"]["usd_per_mtok"]


@pytest.mark.parametrize(
    "assignment",
    [
        "tco.pue=0.5",
        "tco.nope=1",
        "system.planes.scale_up.bw_gb_s_per_die=x2",
        "tco.kwh_usd=abc",
        "hgx-h100:system.price_usd=1",
        "tco.kwh_usd=\n1",
    ],
)
def test_bad_overrides_are_one_line_exit_2(assignment: str) -> None:
    res = runner.invoke(app, [*ARGS, "--set", assignment])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1


def test_power_below_its_parts_is_refused() -> None:
    hw = system_hardware("gb200-nvl72", {None: ["system.power_kw=50"]})
    with pytest.raises(ConfigError, match="power_kw 50.0 is below its parts"):
        power_model(hw, load_tco())


def test_sweep_marks_over_context_and_infeasible_cells() -> None:
    req = SweepRequest(pair=PAIR, input_lens=(1024, 163840), tpot_slos_ms=(1.0, 50.0))
    d = sweep(req, {s: system_hardware(s, {}) for s in PAIR})
    status = {(c["input_len"], c["tpot_slo_ms"]): c for c in d["cells"]}
    assert status[(163840, 50.0)]["status"] == OVER_CONTEXT  # 160K prompt + 1K output > 163,840
    assert status[(1024, 1.0)]["status"].startswith("infeasible") and status[(1024, 1.0)]["ratios"] == {}
    ok = status[(1024, 50.0)]
    assert ok["status"] == "ok"
    for key, ratio in ok["ratios"].items():
        assert ratio == pytest.approx(ok[key][PAIR[0]] / ok[key][PAIR[1]])
    assert marks(d) == [["x A+B", "ctx"], ["", "ctx"]]


def test_sweep_cell_equals_compare_at_the_same_conditions(compared) -> None:
    req = SweepRequest(pair=PAIR, input_lens=(2048,), tpot_slos_ms=(50.0,), output_len=2048)
    cell = sweep(req, {s: system_hardware(s, {}) for s in PAIR})["cells"][0]
    rows = {r["system"]: r for r in compared["systems"]}
    for key in ("output_tok_s_per_system", "output_tok_s_per_chip", "output_tok_s_per_kw"):
        assert cell[key] == pytest.approx({s: rows[s][key] for s in PAIR}, rel=1e-12)


def test_compare_sweep_writes_the_heat_maps(tmp_path) -> None:
    png = tmp_path / "sweep.png"
    res = runner.invoke(app, ["compare", "--sweep", "--versus", ",".join(PAIR), "--plot", str(png), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)["sweep"]
    assert len(d["cells"]) == len(d["input_lens"]) * len(d["tpot_slos_ms"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("versus", ["cloudmatrix384", "a,b,c", "cloudmatrix384,cloudmatrix384", "cloudmatrix384,nope"])
def test_bad_versus_is_one_line_exit_2(versus: str) -> None:
    res = runner.invoke(app, ["compare", "--versus", versus])
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "--osl", "512"],  # --osl belongs to the sweep
        ["compare", "--sweep", "--osl", "0"],
        ["compare", "--sweep", "--stack", "nope"],
        ["compare", "--sweep", "--stack", "cloudmatrix-infer"],  # no build for GB200: refused once, not per cell
    ],
)
def test_bad_sweep_arguments_are_one_line_exit_2(args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1


positive = st.floats(min_value=1e-3, max_value=1e3)


@given(a=positive, b=positive, la=st.floats(0.1, 1), ha=st.floats(1, 10), lb=st.floats(0.1, 1), hb=st.floats(1, 10),
       ta=st.floats(0, 1), tb=st.floats(0, 1), higher=st.booleans())  # fmt: skip
def test_ratio_interval_holds_every_pair_inside_both_intervals(a, b, la, ha, lb, hb, ta, tb, higher) -> None:
    """Any true throughputs inside both sides' intervals give a ratio inside the combined interval."""
    true_a, true_b = a * (la + ta * (ha - la)), b * (lb + tb * (hb - lb))
    ratio = a / b if higher else (1 / a) / (1 / b)
    lo, hi = ratio_interval((la, ha), (lb, hb), ratio, higher)
    true_ratio = true_a / true_b if higher else (1 / true_a) / (1 / true_b)
    assert lo * (1 - 1e-9) <= true_ratio <= hi * (1 + 1e-9)


@given(key=st.sampled_from(["kwh_usd", "pue", "life_years", "chip_idle_share", "systems.gb200-nvl72.chip_tdp_w"]),
       raw=st.one_of(st.text(max_size=12), st.floats(allow_nan=True).map(str)))  # fmt: skip
def test_any_tco_override_loads_or_is_one_config_error(key: str, raw: str) -> None:
    try:
        tco = load_tco((f"tco.{key}={raw}",))
    except ConfigError as e:
        assert "\n" not in str(e) and f"tco.{key}" in str(e)
        return
    node = tco
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    assert node.assumed and node.source.startswith("what-if override")


def test_plan_economics_loads_each_pool_by_its_utilisation() -> None:
    """Two pools: prefill at half its capacity, decode full; the load is their chip-weighted busy share."""
    row = {
        "chips": 40,
        "rate_req_s": 10.0,
        "output_tok_s_per_chip": 100.0,
        "prefill": {"instances": 1, "chips": 8, "tok_s_per_chip": 2048 * 10 / 8 * 2, "busy": 0.6},
        "decode": {"instances": 2, "chips": 16, "tok_s_per_chip": 10 * 1023 / 32, "busy": 0.5},
    }
    hw, tco = load_hardware("gb200-nvl72"), load_tco()
    e = plan_economics(row, hw, tco, 2048, 1024)
    load = (8 * 0.6 * 0.5 + 32 * 0.5 * 1.0) / 40
    assert e == pytest.approx(economics(hw, tco, 100.0 * 72, load))
    assert e["load"] == pytest.approx(0.46)


def test_plan_json_has_cost_and_energy_per_token() -> None:
    res = runner.invoke(app, ["plan", "--system", "gb200-nvl72", "--model", "deepseek-r1", "--workload", "1k-1k",
                              "--tpot-slo", "50", "--no-check", "--top", "1", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["ranked"][0]
    assert row["economics"]["usd_per_mtok"] > 0 and row["economics"]["j_per_token"] > 0


# An unknown interval drawn without a bar: tests/report/test_unknown_interval.py (synthetic rows, both kinds).
