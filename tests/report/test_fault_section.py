"""The report's fault section (issue 27): decode throughput over a simulated run with its faults marked, from
`report --scenario` or a saved `simulate --json` run; a hostile saved run is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.errors import ConfigError
from cloudmatrix.report.fault_section import fault_data, fault_figure, fault_section
from cloudmatrix.report.html import figure, table
from cloudmatrix.sim.engine import simulate
from tests.report.test_report import embedded
from tests.sim.test_faults import _loss, _scenario

runner = CliRunner()


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return simulate(_scenario(_loss("elastic-ep"))).to_dict()


def test_the_figure_draws_the_series_and_marks_each_fault_where_the_timeline_says(run: dict[str, Any]) -> None:
    f = fault_data(run, "test")
    assert f is not None
    fig = fault_figure(f)
    line, *marks = fig.data
    assert list(line.y) == run["faults"]["decode_tok_s_series"]["values"]
    e = run["faults"]["events"][0]
    assert [m.x[0] for m in marks] == [e["at_s"], e["resume_at_s"], e["full_capacity_at_s"]]
    sid, title, body = fault_section(f, table, figure)
    assert sid == "faults" and 'id="fig-faults"' in body and "elastic-ep" in body


def test_a_run_without_faults_has_no_section() -> None:
    assert fault_data({"scenario": "x", "faults": None}, "test") is None


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        ({"events": "x"}, "faults."),
        ({"policy": "restart", "availability": 2.0, "events": [], "decode_tok_s_series": {}}, "availability"),
    ],
)
def test_a_hostile_saved_run_names_the_field(faults: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        fault_data({"scenario": "x", "faults": faults}, "--simulation-json")


def test_report_adds_the_section_from_a_saved_run_and_refuses_a_bad_one(tmp_path: Path, run: dict[str, Any]) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(run))
    out = tmp_path / "r.html"
    args = ["report", "--out", str(out), "--systems", "cloudmatrix384", "--simulation-json", str(saved), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["sections"][-2:] == ["faults", "glance"]
    assert embedded(out.read_text())["faults"]["events"][0]["at_s"] == run["faults"]["events"][0]["at_s"]
    bad = run | {"faults": run["faults"] | {"events": [{"at_s": "soon"}]}}
    saved.write_text(json.dumps(bad))
    res = runner.invoke(app, ["report", "--out", str(tmp_path / "b.html"), "--simulation-json", str(saved)])
    assert res.exit_code == 2 and "faults.events.0.at_s" in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "b.html").exists()
    both = [
        "report",
        "--out",
        str(tmp_path / "c.html"),
        "--scenario",
        "cm384-die-loss",
        "--simulation-json",
        str(saved),
    ]
    res = runner.invoke(app, both)
    assert res.exit_code == 2 and "give one run" in res.output
