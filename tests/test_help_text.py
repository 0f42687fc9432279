"""Help text: no option that is a flag shows a type (Typer 0.29 printed `--json <bool>`), `--set` says what it
takes and where its keys are listed, and `cloudmatrix catalog keys` lists keys `--set` accepts."""

import json
import re

import pytest
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.sim.scenario import load_scenario

runner = CliRunner()
COMMANDS = ("catalog", "estimate", "reproduce", "simulate", "compare", "calibrate", "ablate", "plan", "validate")
COMMANDS += ("serve", "report")


@pytest.mark.parametrize("command", COMMANDS)
def test_no_flag_shows_a_type(command: str) -> None:
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "<bool>" not in res.output and "--help" in res.output
    for line in res.output.splitlines():  # a flag's row: its name(s), then straight to the help text
        if re.search(r"│ --(json|help|public-metrics|wide)\s", line):
            assert "<" not in line.split("│")[1], line


@pytest.mark.parametrize("command", ["simulate", "serve"])
def test_set_help_is_whole(command: str) -> None:
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert "KEY=VALUE" in text and "cloudmatrix catalog keys" in text


def test_catalog_keys_are_keys_set_accepts() -> None:
    res = runner.invoke(app, ["catalog", "keys", "--json"])
    rows = json.loads(res.stdout)["keys"]
    keys = {r["key"] for r in rows}
    assert {"requests", "decode.batch_per_chip", "workload.arrivals.rate_per_s", "workload.output.kind"} <= keys
    paper = load_scenario(None, [])
    tried = 0
    for row in rows:
        if row["type"] == "section":
            continue
        value: object = paper
        for part in row["key"].split("."):
            value = getattr(value, part, None) if value is not None else None
        if value is None or isinstance(value, list | dict | tuple):
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        load_scenario(None, [f"{row['key']}={shown}"])  # each key is one --set takes, at its current value
        tried += 1
    assert tried >= 30
    bad = runner.invoke(app, ["simulate", "--set", "decode.nope=1"])
    assert bad.exit_code == 2 and "nope" in bad.output
