"""`cloudmatrix compare`: each system's published deployment under one model, workload and SLO, the verdict
of a pair, and the sweep of where each wins. Registered on the app in app.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from cloudmatrix.cli.common import JsonFlag, SystemsOption, WorkloadOption, _emit_json, _fail, _run


def compare(
    model: Annotated[str, typer.Option(help="Model id or path to a config.json.")] = "deepseek-r1",
    workload: WorkloadOption = "4k-256",
    tpot_slo: Annotated[float, typer.Option(help="TPOT SLO in ms.")] = 50.0,
    ttft_slo: Annotated[float | None, typer.Option(help="TTFT SLO in ms (shrinks prefill batches).")] = None,
    systems: SystemsOption = None,
    mtp: Annotated[int, typer.Option(help="MTP draft tokens, the same for every system.")] = 1,
    mtp_acceptance: Annotated[float, typer.Option(help="MTP acceptance rate.")] = 0.7,
    target_rate: Annotated[float | None, typer.Option(help="Requests/s to serve: chips needed per system.")] = None,
    plot: Annotated[
        str | None, typer.Option(metavar="PATH", help="Write the throughput-vs-interactivity PNG here (- for stdout).")
    ] = None,
    stack: Annotated[
        str | None, typer.Option(help="One serving stack for every system (default: each system's published one).")
    ] = None,
    versus: Annotated[
        str | None, typer.Option(metavar="A,B", help="The verdict's pair (default: cloudmatrix384,gb200-nvl72).")
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option("--sweep/--no-sweep", help="The pair's ratios over input length x TPOT SLO (--plot: heat maps)."),
    ] = False,
    osl: Annotated[int | None, typer.Option(help="--sweep: output tokens per request (default 1024).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Cost input override, repeatable: tco.kwh_usd=0.08, [SYSTEM:]system.price_usd=3e6; "
            "`cloudmatrix catalog hardware-keys` lists the system and chip keys.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Each system's published deployment for the same model, workload and SLO, side by side, and the verdict."""
    from cloudmatrix.cli import render
    from cloudmatrix.cli.output import Outputs
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.studies.compare_terms import Conditions, system_list
    from cloudmatrix.studies.tco import compare_priced
    from cloudmatrix.studies.verdict import parse_versus, verdict
    from cloudmatrix.workload.shape import parse_workload

    files = Outputs({"--plot": plot}, as_json)
    pair = _run(lambda: parse_versus(versus))
    if osl is not None and not sweep:
        _fail("--osl applies to --sweep only; the table takes --workload INPUT/OUTPUT")
    if sweep:
        from cloudmatrix.cli.compare_out import compare_sweep

        out_len = 1024 if osl is None else osl
        d = _run(
            lambda: compare_sweep(pair, model, out_len, ttft_slo, mtp, mtp_acceptance, stack, tuple(overrides or ()))
        )
        if "--plot" in files:
            from cloudmatrix.report.sweep_plot import sweep_png

            files.write("--plot", sweep_png(d))
        if as_json:
            _emit_json({"sweep": d})
        else:
            from cloudmatrix.cli.compare_out import sweep_tables

            for table in sweep_tables(d):
                files.console.print(table)
        return

    def build(progress: Callable[[int, int], None]) -> tuple[Conditions, tuple[list[Any], dict[str, Any]]]:
        inp, outp = parse_workload(workload)
        cond = Conditions(
            model=model,
            input_len=inp,
            output_len=outp,
            tpot_slo_ms=tpot_slo,
            ttft_slo_ms=ttft_slo,
            mtp=mtp,
            mtp_acceptance=mtp_acceptance,
            target_rate_req_s=target_rate,
            stack=stack,
        )
        ids = system_list(systems)
        ids += [s for s in pair if versus and s not in ids]  # the pair asked for is always compared
        return cond, compare_priced(ids, cond, tuple(overrides or ()), progress)

    with LazyProgress("pricing systems") as progress:
        cond, (results, d) = _run(lambda: build(progress.update))
    if plot is not None:
        from cloudmatrix.report.plot import tradeoff_png

        title = f"{model}, {cond.input_len}/{cond.output_len} tokens, MTP {mtp} at {mtp_acceptance:.0%}"
        files.write("--plot", tradeoff_png(results, title, tpot_slo))
    d["verdict"] = verdict(d["systems"], pair)
    if as_json:
        _emit_json(d)
    else:
        from cloudmatrix.cli.compare_out import verdict_table

        for table in render.compare_table(d, files.console.width):
            files.console.print(table)
        if d["verdict"] is not None:
            files.console.print(verdict_table(d["verdict"]))
