"""What every command shares: the consoles, one-line failure (exit 2) and JSON output. With output.py (the
file writer), the only code besides the commands that prints or exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.inputs import finite_json

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A Rich console made on first use: a run that prints only JSON never loads Rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None
        self._width: int | None = None

    def _get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
            if self._width is not None:
                self._console.width = self._width
            elif not self._console.is_terminal:  # piped output: do not squeeze tables to 80 columns
                self._console.width = 160
        return self._console

    @property
    def width(self) -> int:
        return self._get().width

    @width.setter
    def width(self, value: int) -> None:
        self._width = value
        if self._console is not None:
            self._console.width = value

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self._get().print(*objects, **kwargs)


out = LazyConsole(stderr=False)
err = LazyConsole(stderr=True)


def set_wide() -> None:
    """``--wide``: lay every table out in full, one line per row, whatever the terminal's width (cells are
    never cut; the terminal wraps the lines)."""
    out.width = 400


JsonFlag = Annotated[bool, typer.Option("--json/--no-json", help="Print one JSON object on stdout.")]
SystemsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--system",
        "--systems",
        help="System ids, repeatable or comma-separated (default: all with presets; --systems is an alias).",
    ),
]
WorkloadOption = Annotated[
    str, typer.Option(help="ISL-OSL tokens with k for 1,024 (2k-2k, 8k-1k, 4k-256) or INPUT/OUTPUT (2048/2048).")
]
StackOption = Annotated[
    str | None, typer.Option(help="Serving stack (default: the scenario's, else the system's published one).")
]


def one_line(message: str) -> str:
    """A message as one line: a line break or other control character a user's value carried into it is
    shown escaped (``\\n``), so an error is always one line on stderr."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def _fail(message: str) -> None:
    """One plain line on stderr (never wrapped or styled) and exit code 2."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    raise typer.Exit(2)


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except CloudMatrixError as e:
        _fail(str(e))


def _emit_json(obj: Any) -> None:
    """Strict JSON: a figure that is not a finite number (nothing finished, an unbounded SLO) is null."""
    sys.stdout.write(json.dumps(finite_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _stack_set(stack: str | None, assignments: list[str] | None) -> list[str]:
    """``--stack`` as the scenario override it is; explicit ``--set`` assignments come after and win."""
    return ([f"stack={stack}"] if stack else []) + list(assignments or [])


def _warn_precision(model: str, precision: str) -> None:
    """One stderr line when the weight precision priced is not the one the model's checkpoint declares."""
    from cloudmatrix.catalog.models import load_model, precision_note

    note = _run(lambda: precision_note(load_model(model), precision))
    if note:
        err.print(note, markup=False, highlight=False, soft_wrap=True)


def _checkpoint_precision(model: str, given: str | None, default: str) -> str:
    """``given``, else the precision the model's checkpoint declares (``quantization_config``) when the twin
    prices it, else ``default``; warns when the one priced is not the checkpoint's."""
    from cloudmatrix.catalog.models import PRECISION_OF_FORMAT, load_model

    fmt = _run(lambda: load_model(model).checkpoint_format)
    chosen = given or PRECISION_OF_FORMAT.get(fmt or "", default)
    _warn_precision(model, chosen)
    return chosen


def quiet_flag_types() -> None:
    """Typer 0.29's help (a release not pinned, but kept working) shows every option's type, a flag's too
    (``--json <bool>``), which reads as if the flag took a value. A flag (``--x`` or ``--x/--no-x``) takes
    none: show no type for it. Help cells fold rather than cut off, on every release."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)  # (earlier releases show no option's type)
    if shown is not None and not getattr(shown, "quiet_flags", False):

        def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
            return None if self.is_flag or self.count else shown(self, ctx)

        display_type_rich.quiet_flags = True  # type: ignore[attr-defined]
        option_class: Any = TyperOption  # (a method of Typer 0.29 and later only)
        option_class.display_type_rich = display_type_rich
    fold_help_cells()


def fold_help_cells() -> None:
    """Rich cuts a help cell's long word with an ellipsis (``--set`` examples, long option names in an
    80-column terminal); fold it onto the next line instead, so no help text is ever cut off. Rich loads
    only when help is drawn: the patch goes in then."""
    from typer.core import TyperCommand, TyperGroup

    for cls in (TyperCommand, TyperGroup):
        original = cls.format_help
        if getattr(original, "folds", False):
            continue

        def format_help(self: Any, ctx: Any, formatter: Any, _original: Any = original) -> None:
            _folding_tables()
            _original(self, ctx, formatter)

        format_help.folds = True  # type: ignore[attr-defined]
        cls.format_help = format_help  # type: ignore[method-assign]


def _folding_tables() -> None:
    from rich.columns import Columns
    from rich.table import Table
    from rich.text import Text
    from typer import rich_utils

    if getattr(rich_utils.Table, "folds", False):
        return

    class FoldingTable(Table):
        folds = True

        def add_row(self, *renderables: Any, **kwargs: Any) -> None:
            while len(self.columns) < len(renderables):  # columns made implicitly fold long words
                self.add_column(overflow="fold")
            super().add_row(*renderables, **kwargs)

    class FoldingColumns(Columns):  # an option's help: its text, default and env var
        def __init__(self, renderables: Any = None, *args: Any, **kwargs: Any) -> None:
            super().__init__(renderables, *args, **kwargs)
            for item in self.renderables:
                if isinstance(item, Text):
                    item.overflow = "fold"

    rich_utils.Table = FoldingTable  # type: ignore[misc]
    rich_utils.Columns = FoldingColumns  # type: ignore[misc]
