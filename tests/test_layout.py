"""Tables fit the terminal: at 80 columns `compare` and `plan` split into tables that repeat the key
column, no line is wider than the screen and no cell is cut; `--wide` keeps one table."""

import json

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.cli.layout import CELL_PADDING, column_groups, fitted_tables
from cloudmatrix.cli.plan_render import plan_tables
from cloudmatrix.cli.render import compare_table

runner = CliRunner()


def _rendered(tables: list, width: int) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for t in tables:
        console.print(t)
    return console.export_text().splitlines()


def _check_fits(lines: list[str], width: int, cells: list[str]) -> None:
    assert max(len(line) for line in lines) <= width
    assert not any("…" in line for line in lines)
    text = "\n".join(lines)
    for cell in cells:  # every figure appears whole
        assert cell in text, cell


def _json(args: list[str]) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_compare_fits_80_columns_and_wide_keeps_one_table() -> None:
    d = _json(["compare"])
    for width in (80, 100):
        lines = _rendered(compare_table(d, width), width)
        _check_fits(lines, width, [r["system"] for r in d["systems"]])
        _check_fits(lines, width, [f"{r['output_tok_s_per_system']:,.0f}" for r in d["systems"] if r["feasible"]])
    # one results table, the "why" table, the intervals table and why they extrapolate
    assert len(compare_table(d, 400)) == 4
    assert len(compare_table(d, 80)) > 2


def test_plan_fits_80_columns() -> None:
    d = _json(
        ["plan", "--system", "cloudmatrix384", "--model", "deepseek-r1", "--workload", "4k-256"]
        + ["--precision", "int8", "--top", "2", "--no-check"]
    )
    lines = _rendered(plan_tables(d, 80), 80)
    _check_fits(lines, 80, [str(r["chips"]) for r in d["ranked"]])


@given(
    widths=st.lists(st.integers(1, 40), min_size=1, max_size=15),
    keys=st.integers(0, 2),
    screen=st.integers(20, 200),
)
def test_column_groups_cover_every_column_once_with_the_keys_in_each(widths, keys, screen) -> None:
    keys = min(keys, len(widths))
    groups = column_groups(widths, keys, screen)
    others = [i for g in groups for i in g if i >= keys]
    assert sorted(others) == list(range(keys, len(widths)))
    for g in groups:
        assert g[:keys] == list(range(keys))
        width = 1 + sum(widths[i] + CELL_PADDING for i in g)
        assert width <= screen or len(g) <= keys + 1  # a lone column wider than the screen still shows


def test_fitted_tables_put_the_caption_under_the_last() -> None:
    tables = fitted_tables("t", ["k", "a" * 30, "b" * 30], [["1", "2", "3"]], caption="note", width=50)
    assert len(tables) == 2 and tables[-1].caption == "note" and tables[0].caption is None
