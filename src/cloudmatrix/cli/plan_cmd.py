"""`cloudmatrix plan`: the deployment planner's command and its tables. Registered on the app in app.py;
the app's helpers are imported when the command runs (app.py imports this module)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any

import typer

from cloudmatrix.cli import common as cli
from cloudmatrix.errors import CloudMatrixError


def plan(
    system: Annotated[str, typer.Option(help="System id (or atlas950-superpod etc.).")] = "cloudmatrix384",
    model: Annotated[str, typer.Option(help="Model id or path to a config.json.")] = "deepseek-r1",
    workload: Annotated[
        str,
        typer.Option(
            help="ISL-OSL with k for 1,024 (2k-2k, 4k-256), INPUT/OUTPUT, a workload/scenario YAML or a trace."
        ),
    ] = "4k-256",
    ttft_slo: Annotated[float, typer.Option(help="TTFT SLO in ms (mean at the planned load).")] = 5000.0,
    tpot_slo: Annotated[float, typer.Option(help="TPOT SLO in ms.")] = 50.0,
    chips: Annotated[int | None, typer.Option(help="Chip budget (default: the whole system).")] = None,
    top: Annotated[int, typer.Option(help="Deployments to list and check in simulation.")] = 5,
    mtp_acceptance: Annotated[float, typer.Option(help="MTP acceptance rate (an input, never fitted).")] = 0.7,
    load: Annotated[float, typer.Option(help="Planned utilisation of the binding pool (0-1).")] = 0.9,
    precision: Annotated[
        str | None, typer.Option(help="Comma-separated precisions to search (default: all the chip runs natively).")
    ] = None,
    cp: Annotated[
        str, typer.Option(help="Comma-separated prefill context-parallel degrees (dies) to search, e.g. 1,32.")
    ] = "1",
    afd: Annotated[
        bool,
        typer.Option(
            "--afd/--no-afd",
            help="Plan an attention-FFN disaggregated decode instance: search the attention:FFN split and the "
            "microbatch count under the TPOT SLO, and check the best in simulation.",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="What-if hardware override, repeatable: chip.die.hbm_gb=128, or x2 to multiply "
            "(system.nodes=x2). `cloudmatrix catalog hardware-keys` lists every key.",
        ),
    ] = None,
    stack: Annotated[
        str | None, typer.Option(help="Serving stack priced (default: the system's published one).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Re-run the listed deployments in simulation.")
    ] = True,
    ray: Annotated[
        bool, typer.Option("--ray/--no-ray", help="Run the sweep on Ray (a local cluster unless --ray-address).")
    ] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (implies --ray).")] = None,
    ray_cpus: Annotated[
        int | None,
        typer.Option(help="Workers of a local Ray cluster, at most the cores (default: all; implies --ray)."),
    ] = None,
    plot: Annotated[str | None, typer.Option(metavar="PATH", help="Write the Pareto PNG here (- for stdout).")] = None,
    write_scenario: Annotated[
        str | None, typer.Option(metavar="PATH", help="Write the chosen deployment as a scenario YAML (- for stdout).")
    ] = None,
    emit: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Write the chosen deployment's engine launch scripts, Dynamo and llm-d manifests and a benchmark "
            "script into DIR (created if new; symlinks refused).",
        ),
    ] = None,
    availability: Annotated[
        float | None,
        typer.Option(
            help="Availability target (0 < target < 1, e.g. 0.999): each listed deployment's expected decode-pool "
            "availability under each recovery policy, with the spare instances the target needs and their chips."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Search deployments (pool sizes, EP, batch, microbatching, MTP, precision) for the best goodput per chip."""
    from cloudmatrix.cli.output import Outputs, resolve_directory
    from cloudmatrix.inputs import check_local_workers, check_number
    from cloudmatrix.planner.check import MAX_CHECKED

    if afd and availability is not None:
        cli._fail("--availability: not with --afd (an AFD instance's recovery is not priced); drop one")
    if afd:
        from cloudmatrix.cli.plan_afd import plan_afd

        plan_afd(system, model, workload, tpot_slo, mtp_acceptance, precision, stack, check, top, as_json, chips)
        return
    emit_dir = cli._run(lambda: resolve_directory(emit, "--emit")) if emit is not None else None
    files = Outputs({"--write-scenario": write_scenario, "--plot": plot}, as_json)
    cli._run(lambda: check_local_workers("--ray-cpus", ray_cpus, ray_address))
    if availability is not None:
        from cloudmatrix.planner.availability import check_target

        cli._run(lambda: check_target(availability))
    if check:  # each listed deployment is simulated: bounded before the search starts
        cli._run(lambda: check_number("--top (with --check; --no-check lists more)", top, hi=MAX_CHECKED))
    request = _request(
        system, model, workload, (ttft_slo, tpot_slo), chips, top, mtp_acceptance, load, precision, set_ or [], stack
    )
    degrees = cli._run(lambda: _cp_degrees(cp))
    if degrees != (1,):
        request = replace(request, space=replace(request.space, context_parallel=degrees))
    use_ray = ray or ray_address is not None or ray_cpus is not None
    d, result = _search(request, check, use_ray, ray_address, ray_cpus)
    from cloudmatrix.studies.intervals import PLAN_METRICS, attach

    for row in d["ranked"]:
        query = {"model": d["model"], "weights": row.get("precision"), "isl": d["workload"]["input_len"]}
        attach(row, d["system"], PLAN_METRICS, d["stack"], query)
    if availability is not None:
        from cloudmatrix.cli.fault_render import plan_availability

        cli._run(lambda: plan_availability(d, result, availability))
    if "--write-scenario" in files:
        _write_scenario(files, result, d)
    if "--plot" in files:
        files.write("--plot", _pareto(result, request))
    if emit_dir is not None:
        _emit(emit_dir, result, d)
    if as_json:
        cli._emit_json(d)
    else:
        from cloudmatrix.cli.plan_render import plan_tables

        for table in plan_tables(d, files.console.width):
            files.console.print(table)


def _request(
    system: str,
    model: str,
    workload: str,
    slos_ms: tuple[float, float],
    chips: int | None,
    top: int,
    mtp_acceptance: float,
    load: float,
    precision: str | None,
    overrides: list[str],
    stack: str | None,
) -> Any:
    from cloudmatrix.planner.inputs import PlanRequest
    from cloudmatrix.planner.space import SearchSpace

    return PlanRequest(
        system=system,
        model=model,
        workload=workload,
        ttft_slo_ms=slos_ms[0],
        tpot_slo_ms=slos_ms[1],
        chips=chips,
        top=top,
        mtp_acceptance=mtp_acceptance,
        utilisation=load,
        hardware_overrides=tuple(overrides),
        stack=stack,
        space=SearchSpace(precisions=tuple(p.strip() for p in precision.split(",")) if precision else None),
    )


def _cp_degrees(text: str) -> tuple[int, ...]:
    """``--cp 1,32`` as degrees, each a whole number of dies from 1 to a system's largest."""
    from cloudmatrix.inputs import check_number

    degrees = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise CloudMatrixError(f"--cp: got '{part.strip()}'; expected comma-separated whole numbers >= 1") from None
        check_number("--cp", value, lo=1, hi=100_000, integer=True)
        degrees.append(value)
    return tuple(dict.fromkeys(degrees))


class _Timed:
    """A cost executor that adds up the time spent costing, so candidates/s counts only that."""

    def __init__(self, run: Any) -> None:
        self.run, self.seconds = run, 0.0

    def __call__(self, job: Any, candidates: Any, progress: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.run(job, candidates, progress)
        finally:
            self.seconds += time.perf_counter() - started


def _search(
    request: Any, check: bool, use_ray: bool, address: str | None, cpus: int | None
) -> tuple[dict[str, Any], Any]:
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.planner import search
    from cloudmatrix.planner.evaluate import cost_candidates
    from cloudmatrix.planner.versus import versus_preset

    sweep = _connect(address, cpus) if use_ray else None
    try:
        started = time.perf_counter()
        costing = _Timed(_ray_cost(sweep) if sweep else cost_candidates)
        with LazyProgress("costing candidates") as progress:
            result = cli._run(lambda: search.fast_path(request, progress.update, costing))
        fast_s = time.perf_counter() - started
        if check:
            with LazyProgress("simulating the listed deployments") as progress:
                runner = _ray_checks(sweep, result) if sweep else _local_checks(result, progress.update)
                result = cli._run(lambda: search.check_path(result, runner))
        total_s = time.perf_counter() - started
    finally:
        if sweep:
            sweep.close()
    d = result.to_dict()
    d["versus_compare"] = cli._run(lambda: versus_preset(result))
    d["timing_s"] = {"fast_path": fast_s, "costing": costing.seconds, "checks": total_s - fast_s, "total": total_s}
    d["candidates_per_s"] = result.stats.costed / costing.seconds if costing.seconds > 0 else None
    d["ray_workers"] = sweep.workers if sweep else None
    cli._run(lambda: _economics(d, request))
    return d, result


def _economics(d: dict[str, Any], request: Any) -> None:
    """$ per million output tokens and J per token of each listed deployment (catalog TCO inputs; the
    system's price and power as --set gives them)."""
    from cloudmatrix.catalog.tco import load_tco
    from cloudmatrix.planner.inputs import load_overridden_hardware
    from cloudmatrix.studies.tco import plan_economics

    hw, tco, w = load_overridden_hardware(request.system, request.hardware_overrides), load_tco(), d["workload"]
    for row in d["ranked"]:
        row["economics"] = plan_economics(row, hw, tco, w["input_len"], w["output_len"])


def _connect(address: str | None, cpus: int | None) -> Any:
    from cloudmatrix.planner.ray_sweep import RaySweep

    return cli._run(lambda: RaySweep(address, cpus))


def _ray_cost(sweep: Any) -> Any:
    from cloudmatrix.planner.ray_sweep import ray_cost

    return ray_cost(sweep)


def _local_checks(result: Any, progress: Any) -> Any:
    """The checks one deployment at a time in this process, reporting each."""
    from cloudmatrix.planner.search import CheckChunk

    chunk = CheckChunk(result.workload, result.request)

    def run(deployments: list[Any]) -> list[Any]:
        out = []
        for i, d in enumerate(deployments):
            progress(i, len(deployments))
            out += chunk([d])
        return out

    return run


def _ray_checks(sweep: Any, result: Any) -> Any:
    from cloudmatrix.planner.search import CheckChunk

    chunk = CheckChunk(result.workload, result.request)
    return lambda deployments: sweep.map_chunks(chunk, deployments)


def _write_scenario(files: Any, result: Any, d: dict[str, Any]) -> None:
    from cloudmatrix.planner.scenario_out import scenario_yaml

    if not result.listed:
        cli._fail(f"no deployment meets the SLOs ({result.why_empty}): nothing to write")
    files.write("--write-scenario", scenario_yaml(result.listed[0], result.workload, result.request))
    d["scenario_path"] = files.targets["--write-scenario"].given


def _emit(target: Any, result: Any, d: dict[str, Any]) -> None:
    from cloudmatrix.cli.output import write_directory
    from cloudmatrix.planner.emit import emit_files

    if not result.listed:
        cli._fail(f"no deployment meets the SLOs ({result.why_empty}): nothing to emit")
    files = cli._run(lambda: emit_files(result.listed[0], result.workload, result.request))
    d["emitted"] = cli._run(lambda: write_directory(target, files))
    cli.err.print(f"wrote {len(files)} files into {target.given}", markup=False, highlight=False, soft_wrap=True)


def _pareto(result: Any, request: Any) -> bytes:
    from cloudmatrix.report.plot import pareto_png

    ranking = result.ranking
    points = [(x.tok_s_per_user, x.output_tok_s_per_chip) for x in ranking.deployments]
    front = [(x.tok_s_per_user, x.output_tok_s_per_chip) for x in ranking.pareto]
    best = result.listed[0] if result.listed else None
    chosen = (best.tok_s_per_user, best.output_tok_s_per_chip) if best else None
    title = f"{request.model} on {result.hardware_id}, {result.workload.name}"
    return pareto_png(points, front, chosen, title, request.tpot_slo_ms)
