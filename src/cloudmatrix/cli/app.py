"""The `cloudmatrix` command. Every command has ``--json`` (one JSON object on stdout, nothing else);
user errors print one line on stderr and exit with code 2. (No postponed annotations here or in the
commands' modules: Typer reads each option's annotation, and evaluating it from a string costs a compile.)"""

import gc
import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cloudmatrix.cli.common import (
    JsonFlag,
    _emit_json,
    _fail,
    _run,
    one_line,
    out,
    quiet_flag_types,
    set_wide,
)
from cloudmatrix.errors import CloudMatrixError

APP_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "help": "Digital twin of Huawei CloudMatrix384 / CloudMatrix-Infer LLM serving.",
}
quiet_flag_types()


def _print_version(asked: bool) -> None:
    if asked:
        from cloudmatrix import __version__

        sys.stdout.write(f"cloudmatrix {__version__}\n")
        raise typer.Exit()


def _options(
    wide: Annotated[
        bool, typer.Option("--wide/--no-wide", help="Lay tables out for a wide screen (no folded cells).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """Digital twin of Huawei CloudMatrix384 / CloudMatrix-Infer LLM serving."""
    if wide:
        set_wide()


def catalog(
    what: Annotated[str, typer.Argument(help="systems, models, keys or hardware-keys")] = "systems",
    system: Annotated[str, typer.Option(help="hardware-keys: the system whose values are shown.")] = "cloudmatrix384",
    as_json: JsonFlag = False,
) -> None:
    """List catalog systems (with derived totals), models (with parameter counts), the scenario keys that
    simulate's and serve's --set take (keys), or the hardware keys of plan's and compare's what-if
    --set (hardware-keys), with their types and defaults."""
    from cloudmatrix.cli import render
    from cloudmatrix.studies.catalog_view import hardware_key_rows, model_rows, scenario_key_rows, system_rows

    listings = {
        "systems": system_rows,
        "models": model_rows,
        "keys": scenario_key_rows,
        "hardware-keys": lambda: hardware_key_rows(system),
    }
    if what not in listings:
        _fail(f"unknown catalog '{what}'; expected one of: {', '.join(sorted(listings))}")
    rows = _run(listings[what])
    tables = {
        "systems": render.catalog_systems_table,
        "models": render.catalog_models_table,
        "keys": render.catalog_keys_table,
        "hardware-keys": lambda rows: render.catalog_keys_table(
            rows, f"Hardware keys for --set (plan, compare) on {system}"
        ),
    }
    if as_json:
        _emit_json({what: rows})
    else:
        out.print(tables[what](rows))


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


def ablate(as_json: JsonFlag = False) -> None:
    """Switch CloudMatrix-Infer's optimisations off one at a time on the paper's deployment (P3 §5.4)."""
    from cloudmatrix.cli import render
    from cloudmatrix.studies.ablate import ablate as run_ablate

    rows = [r.to_dict() for r in _run(run_ablate)]
    if as_json:
        _emit_json({"system": "cloudmatrix384", "model": "deepseek-r1", "rows": rows})
    else:
        out.print(render.ablate_table(rows))


def calibrate(
    write_expert_loads: Annotated[
        bool,
        typer.Option(
            "--write-expert-loads/--no-write-expert-loads",
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
        write_file(
            EXPERT_LOADS_PATH,
            "--write-expert-loads/--no-write-expert-loads",
            text,
            f" ({len(table['factors'])} factors)",
        )
        return
    from cloudmatrix.cli.progress import LazyProgress

    with LazyProgress("refitting constants") as progress:
        d = _run(lambda: calibration_report(progress.update))
    if as_json:
        _emit_json(d)
    else:
        for name, row in d["constants"].items():
            out.print(f"{name:52s} fitted {row['fitted']:.4g}   catalog {row['catalog']:.4g}   ({row['rows']})")


# Every command in the order help lists them: those above, and those in their own modules (``NAME_cmd.py``),
# imported only when run, so a command does not pay for the imports of the others.
COMMANDS = (
    *("catalog", "reproduce", "ablate", "calibrate"),
    *("estimate", "simulate", "compare", "plan", "validate", "serve", "report"),
)
_HERE: dict[str, Callable[..., None]] = {
    "catalog": catalog,
    "reproduce": reproduce,
    "ablate": ablate,
    "calibrate": calibrate,
}


def _command(name: str) -> Callable[..., None]:
    if name in _HERE:
        return _HERE[name]
    command: Callable[..., None] = getattr(importlib.import_module(f"cloudmatrix.cli.{name}_cmd"), name)
    return command


def _typer_app(names: tuple[str, ...]) -> typer.Typer:
    built = typer.Typer(**APP_SETTINGS)
    built.callback()(_options)
    for name in names:
        built.command()(_command(name))
    return built


def __getattr__(name: str) -> typer.Typer:
    """``app``, the Typer app with every command (for help, tests and Typer's runner), made on first use."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    full = globals()["app"] = _typer_app(COMMANDS)
    return full


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
    a run needs one, and only its module imported (the full app for help and for a name that is no command)."""
    name = next((a for a in args if not a.startswith("-")), None)
    return _typer_app((name,)) if name in COMMANDS else _typer_app(COMMANDS)


def main(argv: list[str] | None = None) -> int:
    """The console entry point. Bad input ends in one line and exit 2 (usage errors too: the option, the value
    and what was expected, and where the help is); anything that escapes the twin's own errors is an
    internal error: one line and exit 3 (``--debug`` shows the traceback)."""
    # pydantic looks for plugins in every installed package's metadata before its first schema; the twin
    # uses none, and the search costs a bare estimate a few per cent of its start-up (a user's own setting is kept)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # what the imports made (modules, classes, functions) lives as long as the process: the cycle collector
    # need not walk it again at every collection of the run (2 % of a bare estimate's instructions)
    gc.freeze()
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
            sys.stderr.write(f"error: {one_line(message)} (see `{where}`)\n")
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except _interrupts():
        sys.stderr.write("interrupted\n")
        return 130
    except CloudMatrixError as e:
        sys.stderr.write(f"error: {one_line(str(e))}\n")
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
