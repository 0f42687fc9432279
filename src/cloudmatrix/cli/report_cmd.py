"""`cloudmatrix report`: one self-contained HTML page (compare, the trade-off curves, step breakdowns,
reproduce, validation, optionally the planner). Registered on the app in app.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudmatrix.cli import common as cli

MAX_REPORT_BYTES = 10 * 1024 * 1024  # the page must stay a file one can mail


def report(
    out: Annotated[str, typer.Option("--out", metavar="PATH", help="The HTML file to write (- for stdout).")] = (
        "report.html"
    ),
    model: Annotated[str, typer.Option(help="Model id or path to a config.json.")] = "deepseek-r1",
    workload: cli.WorkloadOption = "4k-256",
    tpot_slo: Annotated[float, typer.Option(help="TPOT SLO in ms.")] = 50.0,
    systems: cli.SystemsOption = None,
    plan: Annotated[
        bool, typer.Option("--plan/--no-plan", help="Add the planner's best CloudMatrix384 deployment.")
    ] = False,
    validate_json: Annotated[
        Path | None, typer.Option(help="A saved `validate --json` run (default: the stored residual table).")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            metavar="SCENARIO",
            help="Simulate a scenario (built-in name or YAML) and, when it has faults, plot its throughput over "
            "time with the faults marked.",
        ),
    ] = None,
    simulation_json: Annotated[
        Path | None,
        typer.Option(help="A saved `simulate --json` run to plot the same way (instead of --scenario)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="Print {path, bytes, sections} on stdout.")] = False,
) -> None:
    """One self-contained HTML page of the twin's answers: open it offline, mail it."""
    from cloudmatrix.cli.output import Outputs
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.inputs import parse_json, read_text
    from cloudmatrix.report.data import report_data
    from cloudmatrix.report.html import render
    from cloudmatrix.studies.compare_terms import Conditions, system_list
    from cloudmatrix.workload.shape import parse_workload

    files = Outputs({"--out": out}, as_json)
    started = time.perf_counter()

    def conditions() -> Conditions:
        inp, outp = parse_workload(workload)
        return Conditions(model=model, input_len=inp, output_len=outp, tpot_slo_ms=tpot_slo)

    cond = cli._run(conditions)
    ids = cli._run(lambda: system_list(systems))
    saved = None
    if validate_json is not None:
        saved = cli._run(
            lambda: _validate_run(parse_json(read_text(validate_json, "validate run"), str(validate_json)))
        )
    if scenario is not None and simulation_json is not None:
        cli._fail("--scenario and --simulation-json: give one run to plot, not both")
    faults = cli._run(lambda: _faults(scenario, simulation_json))
    plan_d = _plan(model, workload, tpot_slo) if plan else None
    with LazyProgress("building the report") as progress:
        data = cli._run(lambda: report_data(cond, ids, saved, plan_d, progress.update, faults))
    page, sections = render(data, f"cloudmatrix report: {model}, {cond.input_len}/{cond.output_len} tokens")
    size = len(page.encode())
    if size > MAX_REPORT_BYTES:
        cli._fail(f"the report would be {size:,} bytes, over the {MAX_REPORT_BYTES:,}-byte limit; pass fewer systems")
    seconds = round(time.perf_counter() - started, 2)
    files.write("--out", page, f" ({size / 1e6:.1f} MB, {len(sections)} sections) in {seconds} s")
    if as_json:
        cli._emit_json({"path": out, "bytes": size, "sections": sections, "seconds": seconds})


def _validate_run(d: Any) -> dict[str, Any]:
    """A saved ``validate --json`` run, its rows checked field by field (a hand-edited or hostile file must
    not reach the report's arithmetic as a list where a system id goes or text where a number goes)."""
    from pydantic import ValidationError

    from cloudmatrix.catalog.sourced import describe_validation_error
    from cloudmatrix.errors import ConfigError
    from cloudmatrix.studies.saved_run import SavedCell, SavedRow

    summary = d.get("summary") if isinstance(d, dict) else None
    if not isinstance(d, dict) or not isinstance(d.get("rows"), list) or not isinstance(summary, dict):
        raise ConfigError("--validate-json: expected the object `cloudmatrix validate --json` prints (rows, summary)")
    if not isinstance(summary.get("cells"), list):
        raise ConfigError("--validate-json: expected the object `cloudmatrix validate --json` prints (summary.cells)")

    def checked(schema: Any, items: list[Any], where: str) -> list[dict[str, Any]]:
        out = []
        for i, item in enumerate(items):
            try:
                out.append(schema.model_validate(item).model_dump())
            except ValidationError as e:
                raise ConfigError(f"--validate-json: {where}[{i}].{describe_validation_error(e)}") from None
        return out

    cells = checked(SavedCell, summary["cells"], "summary.cells")
    return d | {"rows": checked(SavedRow, d["rows"], "rows"), "summary": summary | {"cells": cells}}


def _faults(scenario: str | None, saved: Path | None) -> dict[str, Any] | None:
    """The fault part of a simulated run: the scenario simulated here, or a saved `simulate --json` run."""
    from cloudmatrix.inputs import parse_json, read_text
    from cloudmatrix.report.fault_section import fault_data

    if saved is not None:
        return fault_data(parse_json(read_text(saved, "simulation run"), str(saved)), "--simulation-json")
    if scenario is None:
        return None
    from cloudmatrix.sim.engine import simulate
    from cloudmatrix.sim.scenario import load_scenario

    return fault_data(simulate(load_scenario(scenario)).to_dict(), "--scenario")


def _plan(model: str, workload: str, tpot_slo: float) -> dict[str, Any]:
    """The planner on the CloudMatrix384 with the planner's defaults and no simulation check (seconds, not
    minutes)."""
    from cloudmatrix.cli.plan_cmd import _search
    from cloudmatrix.planner.inputs import PlanRequest

    request = PlanRequest(system="cloudmatrix384", model=model, workload=workload, tpot_slo_ms=tpot_slo)
    d, _ = _search(request, False, False, None, None)
    return dict(d)
