"""The `cloudmatrix` command. Every command has ``--json`` (one JSON object on stdout, nothing else);
user errors print one line on stderr and exit with code 2."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from typing import IO, Annotated, Any, NamedTuple

import typer

from cloudmatrix.cli.common import (
    JsonFlag,
    StackOption,
    SystemsOption,
    WorkloadOption,
    _emit_json,
    _fail,
    _run,
    _stack_set,
    out,
    set_wide,
)
from cloudmatrix.cli.plan_cmd import plan
from cloudmatrix.cli.report_cmd import report
from cloudmatrix.cli.serve_cmd import serve
from cloudmatrix.cli.validate_cmd import validate
from cloudmatrix.errors import CloudMatrixError

APP_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "help": "Digital twin of Huawei CloudMatrix384 / CloudMatrix-Infer LLM serving.",
}
app = typer.Typer(**APP_SETTINGS)


def _print_version(asked: bool) -> None:
    if asked:
        from cloudmatrix import __version__

        sys.stdout.write(f"cloudmatrix {__version__}\n")
        raise typer.Exit()


@app.callback()
def _options(
    wide: Annotated[bool, typer.Option("--wide", help="Lay tables out for a wide screen (no folded cells).")] = False,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """Digital twin of Huawei CloudMatrix384 / CloudMatrix-Infer LLM serving."""
    if wide:
        set_wide()


@app.command()
def catalog(
    what: Annotated[str, typer.Argument(help="systems or models")] = "systems", as_json: JsonFlag = False
) -> None:
    """List catalog systems (with derived totals) or models (with parameter counts)."""
    from cloudmatrix.cli import render
    from cloudmatrix.studies.catalog_view import model_rows, system_rows

    if what not in ("systems", "models"):
        _fail(f"unknown catalog '{what}'; expected one of: models, systems")
    rows = _run(system_rows if what == "systems" else model_rows)
    if as_json:
        _emit_json({what: rows})
    else:
        out.print(render.catalog_systems_table(rows) if what == "systems" else render.catalog_models_table(rows))


@app.command()
def estimate(
    system: Annotated[str, typer.Option(help="System id, e.g. cloudmatrix384.")] = "cloudmatrix384",
    model: Annotated[str, typer.Option(help="Model id or path to a config.json.")] = "deepseek-r1",
    phase: Annotated[str, typer.Option(help="prefill, decode or aggregated.")] = "decode",
    chips: Annotated[int, typer.Option(help="Chips (NPUs/GPUs) in the instance.")] = 160,
    ep: Annotated[int | None, typer.Option(help="Expert-parallel degree in dies (default: all dies).")] = None,
    batch_per_chip: Annotated[
        float | None, typer.Option(help="Decode: sequences per chip (default: the paper's 96).")
    ] = None,
    tokens_per_chip: Annotated[int | None, typer.Option(help="Prefill: tokens per chip per batch.")] = None,
    input_len: Annotated[int, typer.Option(help="Prompt length (tokens).")] = 4096,
    output_len: Annotated[int, typer.Option(help="Output length (tokens).")] = 256,
    kv_len: Annotated[int | None, typer.Option(help="Decode: mean KV length (default input + output/2).")] = None,
    precision: Annotated[
        str, typer.Option(help="int8, fp8, fp4 or bf16 weights; the GEMM compute format too unless refined.")
    ] = "int8",
    activation_precision: Annotated[
        str | None, typer.Option(help="GEMM inputs and compute format (e.g. bf16 for W4A16; default: --precision).")
    ] = None,
    kv_precision: Annotated[str, typer.Option(help="KV-cache precision.")] = "bf16",
    mtp: Annotated[
        int | None,
        typer.Option(help="MTP speculative tokens per step (default: the paper's 1 in decode, 0 in prefill)."),
    ] = None,
    mtp_acceptance: Annotated[
        float | None, typer.Option(help="MTP acceptance rate, an input never fitted (default: the paper's 0.7).")
    ] = None,
    eplb: Annotated[
        str,
        typer.Option(
            help="perfect (uniform load), default (EPLB replicas, the paper's) or none (no redundant copies)."
        ),
    ] = "default",
    routing: Annotated[
        str | None,
        typer.Option(
            help="Expert routing: uniform, zipf:S[@c=C] or a per-expert histogram file (default: the model's)."
        ),
    ] = None,
    cached_fraction: Annotated[
        float, typer.Option(help="Prefill: share of each prompt served from the EMS context cache.")
    ] = 0.0,
    cache_plane: Annotated[str, typer.Option(help="Prefill: read cached KV over ub or vpc.")] = "ub",
    microbatch: Annotated[
        bool | None, typer.Option("--microbatch/--no-microbatch", help="Two-microbatch pipeline (default: the faster).")
    ] = None,
    attention_tp: Annotated[int, typer.Option(help="Prefill MLA TP group (dies; assumed 4).")] = 4,
    tp: Annotated[
        int,
        typer.Option(
            help="Attention tensor-parallel group (dies) for attention, dense FFN and LM head (1: DP attention)."
        ),
    ] = 1,
    moe_tp: Annotated[
        int, typer.Option(help="Expert tensor parallelism: dies each expert's FFN columns are split over.")
    ] = 1,
    redundant_experts: Annotated[
        int | None, typer.Option(help="Extra routed-expert slots for EPLB replicas (default: per layout; 0 allowed).")
    ] = None,
    reserve_gb: Annotated[
        float | None, typer.Option(help="HBM per die kept from weights and KV (default: the stack's, else the chip's).")
    ] = None,
    offload_gb: Annotated[
        float, typer.Option(help="Routed-expert weights per die kept in CPU memory, streamed over the CPU link.")
    ] = 0.0,
    chunk_tokens_per_chip: Annotated[
        float | None,
        typer.Option(help="Aggregated: prompt tokens per chip per step (default: keeps pace with the decode batch)."),
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option(help="Serving stack whose host time per step is added (default: the system's published one)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Steady-state analytic estimate of one prefill batch, decode step, or aggregated (co-located) step. With
    no flags: the paper's decode instance (160 NPUs, EP320, batch 96, MTP 1 at 70 %, INT8, EPLB); each flag
    overrides its part."""
    from cloudmatrix.catalog.presets import default_stack
    from cloudmatrix.deploy import Deployment, Eplb, Phase
    from cloudmatrix.deployment import paper_deployments
    from cloudmatrix.estimate import estimate as run_estimate

    def build() -> dict[str, Any]:
        ph = _choice("phase", phase, Phase)
        decodes = ph != Phase.PREFILL
        paper = paper_deployments()[Phase.DECODE]  # what the flags left out: the paper's decode instance
        draft = (paper.mtp if decodes else 0) if mtp is None else mtp
        accept = (paper.mtp_acceptance if draft else 0.0) if mtp_acceptance is None else mtp_acceptance
        dep = Deployment(
            phase=ph,
            num_chips=chips,
            ep=ep,
            batch_per_chip=(paper.batch_per_chip if decodes else None) if batch_per_chip is None else batch_per_chip,
            tokens_per_chip=tokens_per_chip,
            input_len=input_len,
            output_len=output_len,
            kv_len=kv_len,
            precision=precision,
            activation_precision=activation_precision,
            kv_precision=kv_precision,
            mtp=draft,
            mtp_acceptance=accept,
            eplb=_choice("eplb", eplb, Eplb),
            routing=routing,
            cached_fraction=cached_fraction,
            cache_plane=cache_plane,
            microbatch=microbatch,
            attention_tp=attention_tp,
            tp=tp,
            moe_tp=moe_tp,
            redundant_experts=redundant_experts,
            reserve_gb=reserve_gb,
            offload_gb=offload_gb,
            chunk_tokens_per_chip=chunk_tokens_per_chip,
            stack=stack or default_stack(system),
        )
        return run_estimate(system, model, dep).to_dict() | {"stack": dep.stack}

    d = _run(build)
    from cloudmatrix.studies.intervals import ESTIMATE_METRICS, attach

    attach(
        d,
        system,
        ESTIMATE_METRICS,
        d["stack"],
        {"model": model, "weights": precision, "isl": input_len, "steady": True},
    )
    if as_json:
        _emit_json(d)
    else:
        from cloudmatrix.cli import render

        for table in render.estimate_table(d):
            out.print(table)


def _sim_query(sc: Any) -> dict[str, Any]:
    """What a simulated answer's interval depends on: its model, weights, prompt length and clients."""
    w = sc.workload
    isl = None if w.trace else (w.input.value or w.input.high or (round(w.input.mean) if w.input.mean else None))
    return {"model": sc.model, "weights": sc.precision, "isl": isl, "concurrency": w.arrivals.concurrency}


def _choice(field: str, value: str, enum: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise CloudMatrixError(f"{field} '{value}' is not one of: {', '.join(e.value for e in enum)}") from None


@app.command()
def reproduce(
    reference: Annotated[str, typer.Argument(help="Reference set id.")] = "cloudmatrix-infer",
    as_json: JsonFlag = False,
) -> None:
    """Re-derive the published rows of a paper from the model: published vs predicted and the error."""
    from cloudmatrix.cli import render
    from cloudmatrix.studies.reproduce import reproduce as run_reproduce

    d = _run(lambda: run_reproduce(reference).to_dict())
    if as_json:
        _emit_json(d)
    else:
        out.print(render.reproduce_table(d))


@app.command()
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
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: key=value (dotted path).")] = None,
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
    as_json: JsonFlag = False,
) -> None:
    """Request-level discrete-event simulation of a prefill/decode deployment under a workload: a scenario
    file, a built-in one, or a system's preset deployment (--system, --model, --workload)."""
    from cloudmatrix.cli import render
    from cloudmatrix.cli.output import Outputs
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.sim.engine import simulate as run_simulation

    files = Outputs({"--requests-csv": requests_csv, "--timeline-csv": timeline_csv}, as_json)
    started = time.perf_counter()
    pointed = _Pointed(system, model, workload, tpot_slo, ttft_slo, stack)
    loaded = _run(lambda: _scenario(scenario, pointed, set_))
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
    if as_json:
        _emit_json(d)
    else:
        files.console.print(render.simulate_table(d))


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


@app.command()
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
        bool, typer.Option("--sweep", help="The pair's ratios over input length x TPOT SLO (--plot: heat maps).")
    ] = False,
    osl: Annotated[int | None, typer.Option(help="--sweep: output tokens per request (default 1024).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Cost input override: tco.kwh_usd=0.08, [SYSTEM:]system.price_usd=3e6."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Each system's published deployment for the same model, workload and SLO, side by side, and the verdict."""
    from cloudmatrix.cli import render
    from cloudmatrix.cli.output import Outputs
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.studies.compare import Conditions, system_list
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


@app.command()
def ablate(as_json: JsonFlag = False) -> None:
    """Switch CloudMatrix-Infer's optimisations off one at a time on the paper's deployment (P3 §5.4)."""
    from cloudmatrix.cli import render
    from cloudmatrix.studies.ablate import ablate as run_ablate

    rows = [r.to_dict() for r in _run(run_ablate)]
    if as_json:
        _emit_json({"system": "cloudmatrix384", "model": "deepseek-r1", "rows": rows})
    else:
        out.print(render.ablate_table(rows))


@app.command()
def calibrate(
    write_expert_loads: Annotated[
        bool,
        typer.Option(
            "--write-expert-loads",
            help="Maintainers: re-sample the stored expert-load table of the shipped workflows and write it.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-run the fits of the calibrated constants and show them beside the catalog values."""
    from cloudmatrix.studies.calibrate import calibration_report

    if write_expert_loads:
        from cloudmatrix.catalog.expert_loads import EXPERT_LOADS_PATH
        from cloudmatrix.cli.output import write_file
        from cloudmatrix.studies.expert_table import expert_load_table

        table = _run(expert_load_table)
        text = json.dumps(table, indent=1) + "\n"
        write_file(EXPERT_LOADS_PATH, "--write-expert-loads", text, f" ({len(table['factors'])} factors)")
        return
    from cloudmatrix.cli.progress import LazyProgress

    with LazyProgress("refitting constants") as progress:
        d = _run(lambda: calibration_report(progress.update))
    if as_json:
        _emit_json(d)
    else:
        for name, row in d["constants"].items():
            out.print(f"{name:52s} fitted {row['fitted']:.4g}   catalog {row['catalog']:.4g}   ({row['rows']})")


app.command()(plan)
app.command()(validate)
app.command()(serve)
app.command()(report)


def _interrupts() -> tuple[type[BaseException], ...]:
    """Ctrl-C, and click's and Typer's Abort; looked up only when something failed."""
    import click

    return (KeyboardInterrupt, click.Abort, typer.Abort)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's UsageError, whether Typer runs on click or on its own vendored copy of it (recent Typer
    releases); looked up only when something failed, so a run that succeeds never imports click."""
    import click

    return tuple({c for c in (click.UsageError, *typer.BadParameter.__mro__) if c.__name__ == "UsageError"})


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command being run: Typer reads the signature of every command it holds, and
    a run needs one (the full app for help and for a name that is no command)."""
    name = next((a for a in args if not a.startswith("-")), None)
    picked = [c for c in app.registered_commands if c.callback is not None and c.callback.__name__ == name]
    if not picked:
        return app
    one = typer.Typer(**APP_SETTINGS)
    one.registered_callback = app.registered_callback
    one.registered_commands = picked
    return one


def main(argv: list[str] | None = None) -> int:
    """The console entry point. Bad input ends in one line and exit 2 (usage errors too: the option, the value
    and what was expected, and where the help is); anything that escapes the twin's own errors is an
    internal error: one line and exit 3 (``--debug`` shows the traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        code = _app_for(args)(args=args, prog_name="cloudmatrix", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except _usage_errors() as error:  # evaluated only once something was raised
        e: Any = error  # click's or Typer's vendored UsageError: ctx and format_message either way
        where = f"cloudmatrix {e.ctx.info_name} --help" if e.ctx and e.ctx.parent else "cloudmatrix --help"
        message = " ".join(e.format_message().split())
        if message:  # (no command at all: the help was shown)
            sys.stderr.write(f"error: {message} (see `{where}`)\n")
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except _interrupts():
        sys.stderr.write("interrupted\n")
        return 130
    except CloudMatrixError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except Exception as e:
        if debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        sys.stderr.write(f"internal error, please report (rerun with --debug): {type(e).__name__}: {first}\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
