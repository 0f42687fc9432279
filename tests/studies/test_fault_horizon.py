"""The long-horizon shortcut (issue 27): fault windows simulated in full and steady stretches from a healthy
window agree with a full request-by-request run where both are run.

Tolerances, and why: the fault timelines (pauses, resumption, full capacity) and so the availability are the
same code on the same drawn faults: equal to rounding. Time back to 95 % is read on 1-s bins: ±2 s. Decode
tokens over the horizon: within 3 %, and tokens lost per fault within 15 % (or two seconds of the steady
rate, for a loss as small as a failover's: the metrics read 1-s bins): the windows run on their own
seeds (other arrivals and MTP draws than the full run's), and a fault's loss is the difference of two
noisy quantities (the 30-s baseline before it and what was made after it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.errors import ConfigError
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.fault_spec import Fault
from cloudmatrix.sim.recovery import Recovery
from cloudmatrix.studies.fault_horizon import SETTLE_S, long_horizon, merge
from tests.sim.test_faults import _scenario

HORIZON = 400
EVENTS = [
    {"at_s": 120, "kind": "npu_loss", "target": "decode.0.die.5"},
    {"at_s": 280, "kind": "die_loss", "target": "decode.0.die.9"},
]


def _both(policy: str) -> tuple[dict[str, Any], dict[str, Any]]:
    sc = _scenario({"events": EVENTS, "policy": policy, "repair_s": 30}, requests=60 * HORIZON, duration_s=HORIZON)
    return simulate(sc).to_dict()["faults"], long_horizon(sc)


@pytest.mark.parametrize("policy", ["restart", "elastic-ep", "spare-instance"])
def test_the_shortcut_agrees_with_a_full_run_where_both_run(policy: str) -> None:
    full, short = _both(policy)
    series = full["decode_tok_s_series"]
    tokens = sum(series["values"]) * series["bin_s"]
    assert short["decode_tokens"] == pytest.approx(tokens, rel=0.03)
    assert short["availability"] == pytest.approx(full["availability"], rel=1e-9)
    assert len(short["events"]) == len(full["events"]) == 2
    for a, b in zip(full["events"], short["events"], strict=True):
        for key in ("at_s", "pause_s", "resume_at_s", "degraded_fraction"):
            assert b[key] == pytest.approx(a[key], rel=1e-9), key
        assert abs(b["back_to_95pct_s"] - a["back_to_95pct_s"]) <= 2
        slack = max(0.15 * a["decode_tokens_lost"], 2.0 * short["steady_decode_tok_s"])
        assert abs(b["decode_tokens_lost"] - a["decode_tokens_lost"]) <= slack
    assert short["simulated_s"] < 2 * HORIZON  # the healthy window and the fault windows only


def test_a_long_horizon_simulates_its_fault_windows_only_and_is_deterministic() -> None:
    faults = {"rates": {"die_per_hour": 0.02, "horizon_s": 36_000}, "policy": "elastic-ep", "repair_s": 60}
    sc = _scenario(faults, requests=10)
    a, b = long_horizon(sc), long_horizon(sc)
    assert a == b
    assert len(a["events"]) >= 3 and a["simulated_s"] < 0.1 * a["horizon_s"]
    assert 0 < a["decode_tokens"] <= a["steady_decode_tok_s"] * a["horizon_s"]
    assert 0.9 < a["availability"] < 1.0


def test_windows_overlapping_merge_and_run_from_lead_before_to_settle_after_full_capacity() -> None:
    rec = Recovery(policy="elastic-ep", parts_s={"detect": 2.0}, cut="dies", fenced=(1,), reintegrate_after_s=10.0)
    timeline = [(Fault(at_s=t, kind="die_loss", instance=0, dies=(1,)), rec) for t in (100.0, 110.0, 500.0, 2000.0)]
    windows = merge(timeline, lead=40.0, horizon=1000.0)
    assert [(w.start_s, len(w.faults)) for w in windows] == [(60.0, 2), (460.0, 1)]
    assert windows[0].end_s == pytest.approx(110.0 + 12.0 + SETTLE_S)


def test_closed_loop_or_faultless_scenarios_are_refused() -> None:
    with pytest.raises(ConfigError, match="no faults"):
        long_horizon(_scenario([]).model_copy(update={"faults": None}))
    closed = _scenario({"events": EVENTS}, duration_s=100)
    closed = closed.model_copy(
        update={
            "workload": closed.workload.model_copy(
                update={
                    "arrivals": closed.workload.arrivals.model_copy(
                        update={"kind": "closed", "concurrency": 8, "rate_per_s": None}
                    )
                }
            )
        }  # fmt: skip
    )
    with pytest.raises(ConfigError, match="open-loop"):
        long_horizon(closed)


def test_simulate_long_horizon_prints_the_summary(tmp_path: Path) -> None:
    runner = CliRunner()
    sc = _scenario({"events": EVENTS[:1], "policy": "elastic-ep"}, requests=100, duration_s=200)
    path = tmp_path / "lh.yaml"
    path.write_text(yaml.safe_dump(sc.model_dump(mode="json", exclude_none=True)))
    res = runner.invoke(app, ["simulate", str(path), "--long-horizon", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["horizon_s"] == 200 and len(d["events"]) == 1 and d["windows"][0]["faults"] == 1
    res = runner.invoke(app, ["simulate", str(path), "--long-horizon"])
    assert res.exit_code == 0 and "fault windows" in res.output
    res = runner.invoke(app, ["simulate", str(path), "--long-horizon", "--replications", "2"])
    assert res.exit_code == 2 and "--long-horizon" in res.output
