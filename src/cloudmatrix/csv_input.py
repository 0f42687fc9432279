"""CSV files users hand the twin (validation corpora, request traces), read within size, row and cell limits:
every malformed record is one ``InputError`` naming the line and the column. Part of the input layer
(``inputs.py``), kept apart because it is the one reader of records."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from cloudmatrix.inputs import InputError, read_text

MAX_CELL_CHARS = 64 * 1024  # one CSV cell (the csv module's own limit, 128 KiB, would end in its own error)


def read_csv_rows(
    path: Path, what: str, *, max_bytes: int, max_rows: int
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV file's header and its data rows as ``(line, cells)``, every row as wide as the header. Refused
    with the line (and column) when the file is over ``max_bytes`` (before it is read) or ``max_rows`` (before
    any row is used), holds a NUL, repeats a column name, has a row of the wrong width, a quote left open or a
    cell over ``MAX_CELL_CHARS``. A UTF-8 byte-order mark (as Excel writes) is skipped."""
    text = read_text(path, what, max_bytes).removeprefix("\ufeff")
    origin = path.name
    nul = text.find("\x00")
    if nul >= 0:
        raise InputError(f"{origin} line {text.count(chr(10), 0, nul) + 1}: a NUL character; expected CSV text")
    lines = io.StringIO(text, newline="").readlines()  # the csv module's own line ends (not str.splitlines')
    header: list[str] = []  # filled from the first record; later errors name their column by it
    records = _csv_records(lines, origin, header)
    first = next(records, None)
    if first is None:
        raise InputError(f"{origin}: empty; expected a header row of column names")
    header += [name.strip() for name in first[1]]
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name and name in seen:
            raise InputError(f"{origin}: column {name!r} appears twice (columns {seen[name]} and {i}); expected once")
        seen[name] = i
    rows: list[tuple[int, list[str]]] = []
    for line, cells in records:
        if len(cells) <= 1 and not "".join(cells).strip():
            continue  # a blank line
        if len(rows) == max_rows:
            raise InputError(f"{origin}: more than {max_rows:,} rows; expected at most {max_rows:,} (split the file)")
        if len(cells) != len(header):
            raise InputError(f"{origin} line {line}: {len(cells)} cells; expected {len(header)}, one per column")
        rows.append((line, cells))
    return header, rows


def _csv_records(lines: list[str], origin: str, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """``(first line, cells)`` per record; a malformed record or an oversized cell is refused with its line
    and column."""
    reader = csv.reader(lines, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            column, problem = _csv_problem("".join(lines[start - 1 : reader.line_num]), str(e))
            raise InputError(f"{origin} line {start}, {_column(column, header)}: {problem}") from None
        if max(map(len, cells), default=0) > MAX_CELL_CHARS:
            long = next(i for i, c in enumerate(cells) if len(c) > MAX_CELL_CHARS)
            where, got = _column(long + 1, header), len(cells[long])
            raise InputError(f"{origin} line {start}, {where}: a cell of {got:,} characters; {_CELL_EXPECTED}")
        yield start, cells


_CELL_EXPECTED = f"expected at most {MAX_CELL_CHARS:,}"


def _column(number: int, header: list[str]) -> str:
    name = header[number - 1] if number <= len(header) else ""
    return f"column {number} ({name!r})" if name else f"column {number}"


def _csv_problem(record: str, reason: str) -> tuple[int, str]:
    """The 1-based column where a record the csv module refused goes wrong, and why in words (the module
    names neither): the first cell over ``MAX_CELL_CHARS``, a character after a closing quote, or a quote
    still open at the end of the file."""
    column, start, state = 1, 0, "start"  # state: start | plain | quoted | closed (a quote inside quotes)
    for i, ch in enumerate(record):
        if i - start > MAX_CELL_CHARS:
            return column, f"a cell longer than {MAX_CELL_CHARS:,} characters; {_CELL_EXPECTED}"
        if state == "quoted":
            state = "closed" if ch == '"' else "quoted"
        elif ch == '"' and state in ("start", "closed"):
            state = "quoted"
        elif ch == ",":
            column, start, state = column + 1, i + 1, "start"
        elif ch in "\r\n":
            break
        elif state == "closed":
            return column, f"{ch!r} after a closing quote; expected ',' or the end of the line"
        else:
            state = "plain"
    if state == "quoted" and "end of data" in reason:
        return column, "a quote is still open at the end of the file; expected a closing quote"
    return column, f"not valid CSV ({reason})"
