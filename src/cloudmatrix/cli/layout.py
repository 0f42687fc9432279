"""Tables laid out for the terminal's width: a table wider than the screen is split into several, each
repeating the key columns (the system or the rank), so no cell is ever cut. ``--wide`` sets a width
under which nothing splits."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

CELL_PADDING = 3  # one space each side and the column's border


def _cell_width(cell: str) -> int:
    return max((Text.from_markup(line).cell_len for line in cell.splitlines()), default=0)


def column_groups(widths: Sequence[int], keys: int, width: int) -> list[list[int]]:
    """Column indices per table: the ``keys`` first columns in every group, the others in order, as many
    per group as fit in ``width`` (at least one, however narrow the screen)."""
    key_cols = list(range(keys))
    base = 1 + sum(widths[i] + CELL_PADDING for i in key_cols)
    groups: list[list[int]] = []
    current: list[int] = []
    used = base
    for i in range(keys, len(widths)):
        need = widths[i] + CELL_PADDING
        if current and used + need > width:
            groups.append(key_cols + current)
            current, used = [], base
        current.append(i)
        used += need
    if current or not groups:
        groups.append(key_cols + current)
    return groups


def fitted_tables(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: Sequence[str] = (),
    caption: str | None = None,
    keys: int = 1,
    width: int = 160,
) -> list[Table]:
    """One table if it fits in ``width`` columns, else several with the key columns repeated; the caption
    goes under the last. Headers may fold onto two lines, cells never do."""
    cells = [max([1, *(_cell_width(r[i]) for r in rows)]) for i in range(len(columns))]
    widths = [
        max(cells[i], max(len(word) for word in col.split()) if col.strip() else 1) for i, col in enumerate(columns)
    ]
    groups = column_groups(widths, keys, width)
    tables = []
    for n, group in enumerate(groups):
        part = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
        t = Table(title=title + part)
        for i in group:
            t.add_column(columns[i], justify="left" if columns[i] in left else "right", width=widths[i])
        for r in rows:
            t.add_row(*(r[i] for i in group))
        tables.append(t)
    tables[-1].caption = caption
    return tables
