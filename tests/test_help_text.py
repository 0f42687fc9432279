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


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("columns", ["60", "80"])
def test_no_help_text_is_cut_off(command: str, columns: str) -> None:
    """Rich cuts a long word with an ellipsis; the help folds it instead (the class of the cut `--set`)."""
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": columns})
    assert res.exit_code == 0 and "…" not in res.output, res.output


def test_every_boolean_flag_has_its_negation() -> None:
    """Boolean options read `--x/--no-x` (vLLM's and SGLang's habit), on every command."""
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if getattr(param, "is_bool_flag", False) and param.name not in ("help", "version"):
                assert param.secondary_opts, f"{name} {param.opts[0]} has no --no- form"


@pytest.mark.parametrize("command", ["plan", "compare"])
def test_hardware_set_help_names_its_key_listing(command: str) -> None:
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert "KEY=VALUE" in text and "cloudmatrix catalog hardware-keys" in text


@pytest.mark.parametrize("system", ["cloudmatrix384", "gb200-nvl72"])
def test_hardware_keys_are_keys_set_accepts(system: str) -> None:
    from cloudmatrix.catalog.hardware import load_hardware
    from cloudmatrix.catalog.overrides import apply_hardware_overrides

    res = runner.invoke(app, ["catalog", "hardware-keys", "--system", system, "--json"])
    rows = json.loads(res.stdout)["hardware-keys"]
    keys = {r["key"] for r in rows}
    assert {"chip.die.hbm_gb", "system.planes.scale_up.bw_gb_s_per_die", "system.nodes"} <= keys
    hw = load_hardware(system)
    for row in rows:  # each key takes x1 (its own value) and changes nothing else
        changed = apply_hardware_overrides(hw, [f"{row['key']}=x1"])
        assert changed.totals() == hw.totals(), row["key"]
