"""`cloudmatrix simulate`: the discrete-event simulation of a scenario file, a built-in scenario or a system's
preset deployment, with its tables, CSVs and benchmark-format results. Registered on the app in app.py."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from typing import IO, Annotated, Any, NamedTuple

import typer

from cloudmatrix.cli.common import (
    JsonFlag,
    StackOption,
    _emit_json,
    _fail,
    _run,
    _stack_set,
    _warn_precision,
)
from cloudmatrix.errors import CloudMatrixError


def simulate(
    scenario: Annotated[
        str | None,
        typer.Argument(help="Scenario YAML, built-in name or a system id with a preset (default cm384-paper)."),
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="Simulate this system's preset deployment (no scenario file needed).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="With a preset: model id or config.json (deepseek-r1).")] = None,
    workload: Annotated[
        str | None, typer.Option(help="With a preset: ISL-OSL (2k-2k, 4k-256) or INPUT/OUTPUT tokens (4k-256).")
    ] = None,
    tpot_slo: Annotated[float | None, typer.Option(help="TPOT SLO in ms (a preset's batch is chosen for it).")] = None,
    ttft_slo: Annotated[float | None, typer.Option(help="TTFT SLO in ms.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a scenario field, KEY a dotted path (requests=5000, workload.arrivals.rate_per_s=80, "
            "decode.batch_per_chip=64); repeatable, the later wins. `cloudmatrix catalog keys` lists every key.",
        ),
    ] = None,
    stack: StackOption = None,
    requests_csv: Annotated[
        str | None, typer.Option(metavar="PATH", help="Write one row per request to this CSV (- for stdout).")
    ] = None,
    timeline_csv: Annotated[
        str | None,
        typer.Option(
            metavar="PATH", help="Write every prefill batch and decode step (utilisation, KV use) here (- for stdout)."
        ),
    ] = None,
    result_format: Annotated[
        str | None,
        typer.Option(
            metavar="vllm|sglang",
            help="Print the result as the benchmark's own JSON (vllm bench serve --save-result, or SGLang "
            "bench_serving's line) instead of the table; with --out, write it there.",
        ),
    ] = None,
    fault_policy: Annotated[
        str | None,
        typer.Option(
            metavar="POLICY",
            help="Recovery policy for the scenario's faults: restart, spare-instance, redundant-experts or "
            "elastic-ep (docs/faults.md); the same as --set faults.policy=POLICY.",
        ),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(metavar="PATH", help="Add these faults (a scenario's faults: section) to the scenario."),
    ] = None,
    fault_plot: Annotated[
        str | None, typer.Option(metavar="PATH", help="With faults: write decode throughput over time as a PNG.")
    ] = None,
    replications: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Run the scenario under N seeds (its seed, seed + 1, ...) and report the spread of its figures.",
        ),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="With --replications: local worker processes (default: every core).")
    ] = None,
    ray: Annotated[
        bool, typer.Option("--ray/--no-ray", help="With --replications: run them on Ray (local unless --ray-address).")
    ] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (implies --ray).")] = None,
    out_path: Annotated[
        str | None, typer.Option("--out", metavar="PATH", help="Write the --result-format JSON here (- for stdout).")
    ] = None,
    long_horizon: Annotated[
        bool,
        typer.Option(
            "--long-horizon/--no-long-horizon",
            help="With faults over a long horizon (faults.rates.horizon_s): simulate each fault's window in full and "
            "the steady stretches from a healthy window.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Request-level discrete-event simulation of a prefill/decode deployment under a workload: a scenario
    file, a built-in one, or a system's preset deployment (--system, --model, --workload)."""
    from cloudmatrix.cli import render
    from cloudmatrix.cli.output import Outputs
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.sim.engine import simulate as run_simulation
    from cloudmatrix.studies.result_formats import FORMATS

    if result_format is not None and result_format not in FORMATS:
        _fail(f"--result-format: got {result_format!r}; expected one of {', '.join(FORMATS)}")
    if out_path is not None and result_format is None:
        _fail("--out: writes the --result-format JSON; give --result-format vllm or sglang too")
    files = Outputs(
        {"--requests-csv": requests_csv, "--timeline-csv": timeline_csv, "--out": out_path, "--fault-plot": fault_plot},
        as_json,
    )
    started = time.perf_counter()
    pointed = _Pointed(system, model, workload, tpot_slo, ttft_slo, stack)
    loaded = _run(
        lambda: _with_policy(_with_faults(_scenario(scenario, pointed, set_), faults), fault_policy, fault_plot)
    )
    use_ray = ray or ray_address is not None
    if replications is None and (jobs is not None or use_ray):
        _fail("--jobs, --ray and --ray-address run --replications; give --replications N")
    if long_horizon:
        if replications is not None or requests_csv or timeline_csv or result_format or fault_plot:
            _fail("--long-horizon reports the horizon's summary only; drop --replications and the output flags")
        from cloudmatrix.cli.fault_render import long_horizon_table
        from cloudmatrix.studies.fault_horizon import long_horizon as run_long

        with LazyProgress("simulating the fault windows"):
            summary = _run(lambda: run_long(loaded))
        if as_json:
            _emit_json({"scenario": loaded.name, **summary})
        else:
            files.console.print(long_horizon_table(loaded.name, summary))
        return
    if replications is not None:
        if requests_csv or timeline_csv or result_format or fault_plot:
            _fail("--replications reports the spread only; drop the CSV, --result-format and --fault-plot flags")
        from cloudmatrix.cli.simulate_replicas import run_replications

        run_replications(loaded, replications, jobs, use_ray, ray_address, as_json)
        return
    _warn_precision(loaded.model, loaded.precision)
    with LazyProgress("simulating requests") as progress:
        result = _run(lambda: run_simulation(loaded, progress.update))
    d = result.to_dict()
    d["wall_time_s"] = time.perf_counter() - started
    from cloudmatrix.studies.intervals import SIMULATE_METRICS, attach

    attach(d, result.system, SIMULATE_METRICS, result.stack, _sim_query(loaded))
    if "--requests-csv" in files:
        files.write("--requests-csv", _csv(result.requests_rows()))
    if "--timeline-csv" in files:
        files.write("--timeline-csv", _csv(result.timeline_rows()))
    if "--fault-plot" in files:
        from cloudmatrix.report.fault_plot import fault_png

        files.write("--fault-plot", fault_png(d))
    if result_format is not None:
        from cloudmatrix.inputs import finite_json
        from cloudmatrix.studies.result_formats import result_json

        bench = finite_json(result_json(result, loaded, result_format))
        if out_path is None:
            _emit_json(bench)
            return
        files.write("--out", json.dumps(bench, indent=2, allow_nan=False) + "\n")
    if as_json:
        _emit_json(d)
    else:
        files.console.print(render.simulate_table(d))
        if "faults" in d:
            from cloudmatrix.cli.fault_render import faults_table

            files.console.print(faults_table(d))


def _with_faults(sc: Any, path: str | None) -> Any:
    from cloudmatrix.sim.fault_spec import faults_from_file

    return sc if path is None else sc.model_copy(update={"faults": faults_from_file(path)})


def _with_policy(sc: Any, policy: str | None, plot: str | None) -> Any:
    """The scenario with --fault-policy applied; both fault flags need a scenario with faults."""
    from cloudmatrix.sim.fault_spec import POLICIES

    if (policy is not None or plot is not None) and sc.faults is None:
        flag = "--fault-policy" if policy is not None else "--fault-plot"
        raise CloudMatrixError(
            f"{flag}: scenario {sc.name} has no faults: section; expected one (e.g. simulate cm384-die-loss)"
        )
    if policy is None:
        return sc
    if policy not in POLICIES:
        raise CloudMatrixError(f"--fault-policy: got {policy!r}; expected one of {', '.join(POLICIES)}")
    return sc.model_copy(update={"faults": sc.faults.model_copy(update={"policy": policy})})


class _Pointed(NamedTuple):
    """What `simulate` was pointed at with flags rather than a scenario file."""

    system: str | None
    model: str | None
    workload: str | None
    tpot_slo_ms: float | None
    ttft_slo_ms: float | None
    stack: str | None


def _scenario(source: str | None, p: _Pointed, assignments: list[str] | None) -> Any:
    """The scenario to run: a system's preset when pointed with flags or named by its system id, else a
    file or built-in scenario (the SLO and stack flags as overrides)."""
    from cloudmatrix.catalog.presets import presets
    from cloudmatrix.sim.scenario import is_builtin, load_scenario

    pointed = bool(p.system or p.model or p.workload)
    named = source is not None and source in presets() and not is_builtin(source)
    if named and p.system and p.system != source:
        raise CloudMatrixError(f"simulate {source} --system {p.system}: name one system")
    if named or (source is None and pointed):
        return _preset(source or p.system or "cloudmatrix384", p, assignments)
    if pointed:
        raise CloudMatrixError(
            "--system, --model and --workload build a scenario from a system's preset; with a scenario file "
            "use --set (e.g. --set model=deepseek-v3)"
        )
    return load_scenario(source, _slo_set(p) + _stack_set(p.stack, assignments))


def _preset(system: str, p: _Pointed, assignments: list[str] | None) -> Any:
    from cloudmatrix.catalog.models import load_model
    from cloudmatrix.sim.scenario import scenario_from
    from cloudmatrix.studies.compare import Conditions
    from cloudmatrix.studies.preset_scenario import preset_scenario
    from cloudmatrix.workload.shape import parse_workload

    inp, outp = parse_workload(p.workload or "4k-256")
    model = p.model or "deepseek-r1"
    cond = Conditions(
        model=model,
        mtp=1 if load_model(model).mtp_layers else 0,  # compare's MTP 1, where the model has an MTP head
        input_len=inp,
        output_len=outp,
        tpot_slo_ms=50.0 if p.tpot_slo_ms is None else p.tpot_slo_ms,
        ttft_slo_ms=p.ttft_slo_ms,
        stack=p.stack,
    )
    data = preset_scenario(system, cond)
    return scenario_from(data, list(assignments or []), f"preset scenario {data['name']}")


def _slo_set(p: _Pointed) -> list[str]:
    return [f"slo.{k}={v!r}" for k, v in (("tpot_ms", p.tpot_slo_ms), ("ttft_ms", p.ttft_slo_ms)) if v is not None]


def _csv(rows: list[dict[str, Any]]) -> Callable[[IO[str]], None]:
    """The rows as CSV, written to a stream as the writer asks (a million rows never become one string)."""

    def write(f: IO[str]) -> None:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)

    return write


def _sim_query(sc: Any) -> dict[str, Any]:
    """What a simulated answer's interval depends on: its model, weights, prompt length and clients."""
    w = sc.workload
    isl = None if w.trace else (w.input.value or w.input.high or (round(w.input.mean) if w.input.mean else None))
    return {"model": sc.model, "weights": sc.precision, "isl": isl, "concurrency": w.arrivals.concurrency}
