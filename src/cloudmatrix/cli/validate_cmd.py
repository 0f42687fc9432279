"""`cloudmatrix validate`: the command, its tables and the maintainers' writers (residual table, roles).
Registered on the app in app.py; the app's helpers are imported when the command runs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudmatrix.catalog.residuals import METRIC_LABELS
from cloudmatrix.cli import common as cli
from cloudmatrix.inputs import check_local_workers

if TYPE_CHECKING:  # rich's tables load when a table is drawn, not for --json
    from rich.table import Table

SHOWN = ("output_tok_s_per_chip", "tok_s_per_chip", "throughput_per_chip_tok_s", "tpot_ms", "ttft_ms", "p99_ttft_ms")


def validate(
    corpora: Annotated[
        list[str] | None, typer.Argument(help="Corpus ids or paths (InferenceMAX CSV, YAML rows); default: all.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="Only rows of this system.")] = None,
    stack: Annotated[str | None, typer.Option(help="Only rows of this serving stack.")] = None,
    role: Annotated[str | None, typer.Option(help="Only fitted or predicted rows.")] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Worker processes, at most the cores (default: every core; local runs only).")
    ] = None,
    ray: Annotated[
        bool, typer.Option("--ray/--no-ray", help="Run the rows on Ray (a local cluster unless --ray-address).")
    ] = (False),
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (implies --ray).")] = None,
    plot: Annotated[str | None, typer.Option(metavar="PATH", help="Write the parity PNG here (- for stdout).")] = None,
    rows: Annotated[bool, typer.Option("--rows/--no-rows", help="List every row before the summary.")] = True,
    write_residuals: Annotated[
        bool,
        typer.Option(
            "--write-residuals/--no-write-residuals",
            help="Regenerate the stored residual table (whole shipped corpus).",
        ),
    ] = False,
    write_roles: Annotated[
        bool,
        typer.Option(
            "--write-roles/--no-write-roles", help="Assign roles to new shipped series (old ones never move); no run."
        ),
    ] = False,
    holdout: Annotated[
        str | None,
        typer.Option(
            metavar="KIND",
            help="Out-of-group: hold out each series, system, family, stack, model, isl, band or corpus in turn.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Hold the twin against published measurements it was not fitted on: per row and summarised."""
    from cloudmatrix.cli.output import Outputs

    cli._run(lambda: check_local_workers("--jobs", jobs, ray_address))
    files = Outputs({"--plot": plot}, as_json)
    if write_roles:
        _write_roles()
        return
    if write_residuals and (corpora or system or stack or role):
        cli._fail("--write-residuals runs the whole shipped corpus; drop the corpus and filter arguments")
    started = time.perf_counter()
    if holdout is not None:
        from cloudmatrix.cli.validate_holdout import run_holdout

        if ray or ray_address is not None or plot is not None:
            cli._fail("--holdout runs in the process pool and draws no parity plot; drop --ray and --plot")

        run_holdout(holdout, corpora, system, stack, role, jobs, write_residuals, as_json, files.console, started)
        return
    result = _run(corpora, system, stack, role, jobs, ray or ray_address is not None, ray_address)
    d = result.to_dict()
    d["rows"] = _with_intervals(result)
    d["wall_time_s"] = round(time.perf_counter() - started, 2)
    if write_residuals:
        _write_residuals(result)
    if "--plot" in files:
        from cloudmatrix.report.parity import parity_png

        title = f"cloudmatrix validate: {d['summary']['answered_rows']} of {d['summary']['rows']} rows answered"
        files.write("--plot", parity_png(d["rows"], title))
    if as_json:
        cli._emit_json(d)
        return
    if rows:
        files.console.print(rows_table(d))
    for table in summary_tables(d["summary"]):
        files.console.print(table)


def _run(
    corpora: list[str] | None,
    system: str | None,
    stack: str | None,
    role: str | None,
    jobs: int | None,
    use_ray: bool,
    address: str | None,
) -> Any:
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.studies import validate as v

    sweep = None
    if use_ray:
        from cloudmatrix.planner.ray_sweep import RaySweep

        sweep = cli._run(lambda: RaySweep(address, jobs))
    executor = (lambda rows, progress: sweep.map_chunks(v.run_chunk, rows, progress)) if sweep else None
    try:
        with LazyProgress("validating rows") as progress:
            return cli._run(
                lambda: v.validate(
                    corpora,
                    system=system,
                    stack=stack,
                    role=role,
                    executor=executor or v.run_in_pool(jobs),
                    progress=progress.update,
                )
            )
    finally:
        if sweep:
            sweep.close()


def _with_intervals(result: Any) -> list[dict[str, Any]]:
    """Each entry with the 80 % interval an answer would carry, from the stored out-of-group residuals
    without the entry's own series."""
    from cloudmatrix.catalog.residuals import stored_holdout_residuals
    from cloudmatrix.studies.holdout import validation_entries
    from cloudmatrix.studies.holdout_score import series_without, with_intervals

    fields = ("model_class", "weights", "isl", "isl_band")
    full = with_intervals(
        validation_entries(result.rows, result.entries()), series_without(stored_holdout_residuals()), "series"
    )
    return [{k: v for k, v in e.items() if k not in fields} for e in full]


def _write_residuals(result: Any) -> None:
    import json

    from cloudmatrix.catalog.reference import reference_ids
    from cloudmatrix.catalog.validation import RESIDUALS_PATH
    from cloudmatrix.cli.output import write_file
    from cloudmatrix.studies.reproduce import reproduce
    from cloudmatrix.studies.residual_table import residual_table

    table = residual_table(result.entries(), [reproduce(i) for i in reference_ids()])
    head = {k: v for k, v in table.items() if k != "rows"}
    lines = ",\n".join(json.dumps(r) for r in table["rows"])  # one residual a line: readable diffs
    text = json.dumps(head)[:-1] + ', "rows": [\n' + lines + "\n]}\n"
    write_file(RESIDUALS_PATH, "--write-residuals", text, f" ({len(table['rows'])} residuals)")


def _write_roles() -> None:
    from cloudmatrix.catalog.corpus import roles_yaml
    from cloudmatrix.catalog.validation import ROLES_PATH
    from cloudmatrix.cli.output import write_file

    text = cli._run(roles_yaml)
    write_file(ROLES_PATH, "--write-roles", text)


def _err(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return ""
    if entry["error_pct"] is None:
        return "[red]refused[/]"
    e = entry["error_pct"]
    colour = "green" if abs(e) <= 15 else "yellow" if abs(e) <= 25 else "red"
    return f"[{colour}]{e:+.0f}[/]"


def rows_table(d: dict[str, Any]) -> Table:
    """One line per row: its role, concurrency and the error of each measured metric (%)."""
    from rich.table import Table

    by_row: dict[str, dict[str, dict[str, Any]]] = {}
    for e in d["rows"]:
        by_row.setdefault(e["id"], {})[e["metric"]] = e
    metrics = [m for m in SHOWN if any(m in ms for ms in by_row.values())]
    t = Table(title="validate: error per row and metric (% of measured; refused rows count as misses)")
    for col in ("id", "role", "conc", *(METRIC_LABELS[m] for m in metrics), "note"):
        t.add_column(col, justify="left" if col in ("id", "role", "note") else "right", overflow="fold")
    for rid, ms in by_row.items():
        first = next(iter(ms.values()))
        note = first["reason"] or first["note"]
        conc = "" if first["concurrency"] is None else str(first["concurrency"])
        t.add_row(rid, first["role"], conc, *(_err(ms.get(m)) for m in metrics), note[:90])
    return t


def _stat(cell: dict[str, Any]) -> str:
    med = cell["median_abs_error_pct"]
    if med is None:
        return f"– (0/{cell['rows']})"
    return f"{med:.0f} ({cell['answered']}/{cell['rows']})"


def summary_tables(s: dict[str, Any]) -> list[Table]:
    """Per role: median |error| % (answered / rows) by system x stack and metric, then the overall figures."""
    from rich.table import Table

    tables = []
    for role in ("predicted", "fitted"):
        cells = [c for c in s["cells"] if c["role"] == role]
        if not cells:
            continue
        metrics = [m for m in SHOWN if any(c["metric"] == m for c in cells)]
        t = Table(title=f"{role} rows: median |error| % (answered/rows) by system x stack")
        t.add_column("system x stack")
        for m in metrics:
            t.add_column(METRIC_LABELS[m], justify="right")
        for grouping in ("system x stack", "band", "all"):
            keys = dict.fromkeys(c["key"] for c in cells if c["grouping"] == grouping)  # the summary's order
            for key in keys:
                mine = {c["metric"]: c for c in cells if c["grouping"] == grouping and c["key"] == key}
                t.add_row(key, *(_stat(mine[m]) if m in mine else "" for m in metrics))
            t.add_section()
        tables += [t, _overall(role, [c for c in cells if c["grouping"] == "all"])]
    return tables


def _overall(role: str, cells: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    t = Table(title=f"{role} rows, all: error statistics per metric (refused rows are misses in the shares)")
    for col in ("metric", "rows", "answered", "median |err| %", "p90 |err| %", "bias %", "within 15 %", "within 25 %"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for c in sorted(cells, key=lambda c: SHOWN.index(c["metric"])):
        t.add_row(
            METRIC_LABELS[c["metric"]],
            str(c["rows"]),
            f"{c['answered_share']:.0%}",
            _num(c["median_abs_error_pct"]),
            _num(c["p90_abs_error_pct"]),
            _num(c["bias_pct"], "+.0f"),
            f"{c['within_15_pct']:.0f} %",
            f"{c['within_25_pct']:.0f} %",
        )
    return t


def _num(v: float | None, spec: str = ".0f") -> str:
    return "–" if v is None else format(v, spec)
