"""Corpus files as users hand them over: malformed CSV (short, long and cut rows, empty cells, open quotes,
oversized cells, NULs, repeated columns) is refused with one line naming the line and column, an Excel BOM
is read, sizes and row counts are bounded before any row is used, and any mutation of a real file either
reads or fails as one ``ConfigError`` line."""

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog import corpus, inferencemax
from cloudmatrix.catalog.corpus import load_corpora, load_rows
from cloudmatrix.catalog.inferencemax import read_inferencemax
from cloudmatrix.catalog.validation import VALIDATION_DIR
from cloudmatrix.cli.app import app
from cloudmatrix.csv_input import MAX_CELL_CHARS
from cloudmatrix.errors import ConfigError

CSV = VALIDATION_DIR / "inferencemax-public.csv"
HEADER, *ROWS = CSV.read_text().splitlines()
COLUMNS = HEADER.split(",")
runner = CliRunner()


def _file(tmp_path: Path, text: str | bytes, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _cells(i: int = 0) -> list[str]:
    return next(csv.reader([ROWS[i]]))


def _with(column: str, value: str) -> str:
    cells = _cells()
    cells[COLUMNS.index(column)] = value
    return _csv([COLUMNS, cells])


def _one_line_error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        read_inferencemax(path)
    message = str(e.value)
    assert "\n" not in message and path.name in message.split(":")[0], message
    return message


GOOD = "\n".join([HEADER, *ROWS[:2]]) + "\n"
OPEN_QUOTE = ROWS[0].replace(",4,", ',"4,', 1)
MALFORMED = {  # name -> (file text, what the one-line refusal says)
    "short row": (f"{HEADER}\n{ROWS[0]}\n{ROWS[1][:40]}\n", "line 3: 6 cells; expected 24, one per column"),
    "long row": (f"{HEADER}\n{ROWS[0]},extra\n", "line 2: 25 cells; expected 24"),
    "cut mid-row": (GOOD[: len(HEADER) + len(ROWS[0]) + 30], "line 3: 3 cells; expected 24"),
    "empty cell": (_with("median_tpot_ms", ""), "line 2: column median_tpot_ms: an empty cell; expected a value"),
    "blank cell": (_with("hw", "  "), "line 2: column hw: an empty cell"),
    "open quote": (
        f"{HEADER}\n{OPEN_QUOTE}\n{ROWS[1]}\n",
        "line 2, column 9 ('conc'): a quote is still open at the end of the file",
    ),
    "text after a quote": (_with("hw", "x").replace(",x,", ',"b200"x,'), "line 2, column 2 ('hw'): 'x' after a"),
    "big cell": (_with("image", "i" * (MAX_CELL_CHARS + 1)), "line 2, column 22 ('image'): a cell of 65,537 ch"),
    "huge cell": (_with("image", "i" * 200_000), "line 2, column 22 ('image'): a cell longer than 65,536 char"),
    "huge open quote": (GOOD + '"' + "x" * 200_000 + "\n", "line 4, column 1 ('model'): a cell longer than 65,536"),
    "NUL": (GOOD.replace("sglang", "sg\0lang", 1), "line 2: a NUL character; expected CSV text"),
    "repeated column": (_csv([[*COLUMNS, "conc"], [*_cells(), "9"]]), "column 'conc' appears twice (columns 9 and 25)"),
    "empty file": ("", "empty; expected a header row"),
    "BOM only": ("\ufeff", "empty; expected a header row"),
    "header only": (HEADER + "\n", None),
    "not UTF-8": (GOOD.encode() + b"\xff\n", "not UTF-8 text"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_files_are_refused_by_line_and_column(tmp_path: Path, name: str) -> None:
    text, expected = MALFORMED[name]
    path = _file(tmp_path, text)
    if expected is None:
        assert read_inferencemax(path) == []
    else:
        assert expected in _one_line_error(path)


@pytest.mark.parametrize("name", ["short row", "open quote", "huge cell", "NUL", "repeated column"])
def test_validate_refuses_them_with_exit_2(tmp_path: Path, name: str) -> None:
    path = _file(tmp_path, MALFORMED[name][0])
    res = runner.invoke(app, ["validate", str(path), "--json", "--jobs", "1"])
    assert res.exit_code == 2 and MALFORMED[name][1] in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_a_bom_and_any_line_ending_read_the_same_rows(tmp_path: Path, bom: str, ending: str) -> None:
    text = bom + ending.join([HEADER, *ROWS[:3]]) + ending
    assert read_inferencemax(_file(tmp_path, text)) == read_inferencemax(_file(tmp_path, GOOD + ROWS[2], "plain.csv"))


def test_blank_lines_are_skipped_and_lines_are_the_files(tmp_path: Path) -> None:
    """Line numbers count physical lines (a blank line, a quoted cell over two lines) as an editor shows."""
    cells = _cells(1)
    cells[COLUMNS.index("image")] = "two\nlines"
    bad = _with("conc", "many").splitlines()[1]
    text = f"{HEADER}\n\n{ROWS[0]}\n{_csv([cells])}{bad}\n"
    assert "c.csv line 6: column conc: expected a number, got 'many'" in _one_line_error(_file(tmp_path, text))


@pytest.mark.parametrize("bound", ["rows", "bytes"])
def test_the_size_of_a_csv_is_bounded_before_any_row_is_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    path = _file(tmp_path, "\n".join([HEADER, *ROWS[:5]]) + "\n")
    mapped: list[object] = []
    monkeypatch.setattr(inferencemax, "_row", lambda *a: mapped.append(a))
    if bound == "rows":
        monkeypatch.setattr(inferencemax, "MAX_CSV_ROWS", 4)
        expected = "c.csv: more than 4 rows; expected at most 4 (split the file)"
    else:
        monkeypatch.setattr(inferencemax, "MAX_CSV_BYTES", 1000)
        expected = f"c.csv: {path.stat().st_size:,} bytes; expected at most 1,000"
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_inferencemax(path)
    assert mapped == []


def test_the_shipped_bounds_hold_the_public_corpus_many_times_over() -> None:
    assert 50 * len(ROWS) <= inferencemax.MAX_CSV_ROWS
    assert inferencemax.MAX_CSV_ROWS * 2 * max(len(r) + 1 for r in ROWS) <= inferencemax.MAX_CSV_BYTES


@pytest.mark.parametrize("kind", ["csv", "yaml"])
def test_rows_over_all_corpora_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setattr(corpus, "MAX_ROWS", 3)
    if kind == "csv":
        first, second = _file(tmp_path, GOOD, "a.csv"), _file(tmp_path, "\n".join([HEADER, *ROWS[2:4]]), "b.csv")
        with pytest.raises(ConfigError, match="the corpora hold more than 3 rows; expected at most 3"):
            load_corpora([str(first), str(second)])
    else:
        rows = "\n".join(f"  - {{id: r{i}}}" for i in range(4))
        path = _file(tmp_path, f"id: x\ntitle: x\nrows:\n{rows}\n", "rows.yaml")
        with pytest.raises(ConfigError, match="rows.yaml: 4 rows; expected at most 3"):
            load_rows(str(path))


def test_a_corpus_named_twice_is_read_once(tmp_path: Path) -> None:
    path = str(_file(tmp_path, GOOD))
    assert load_corpora([path, path, path]) == load_corpora([path])


def test_a_yaml_corpus_is_bounded_like_every_yaml_input(tmp_path: Path) -> None:
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(8):
        alias, name = f"*{chr(97 + i)}", chr(98 + i)
        laughs.append(f"{name}: &{name} [" + ", ".join([alias] * 10) + "]")
    path = _file(tmp_path, "\n".join(laughs) + "\n", "laughs.yaml")
    with pytest.raises(ConfigError, match="laughs.yaml: expands to more than 1,000,000 nodes"):
        load_rows(str(path))


# ---- whole-file fuzzing ------------------------------------------------------------------------------
SEED = ("\n".join([HEADER, *ROWS[:3]]) + "\n").encode()
INSERTS = [b'"', b",", b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", b"\0", b'""', b"\xff", b" ", b"x"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = SEED
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["cut", "insert", "delete", "replace"]))
        if how == "cut":
            data = data[:at]
        elif how == "insert":
            data = data[:at] + draw(st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=4)) + data[at:]
        elif how == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
        else:
            data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at + 3 :]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_any_mutation_of_a_real_file_reads_or_fails_as_one_line(tmp_path: Path, data: bytes) -> None:
    path = _file(tmp_path, data, "fuzz.csv")
    try:
        rows = read_inferencemax(path)
    except ConfigError as e:
        assert "\n" not in str(e) and "\r" not in str(e) and "fuzz.csv" in str(e)
    else:
        assert len(rows) <= 3 + data.count(b"\n") and all(r.workload.concurrency >= 1 for r in rows)
