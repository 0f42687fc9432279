"""`cloudmatrix validate --holdout KIND`: the out-of-group run, its tables and the maintainers' writer of the
stored out-of-group residuals (``--write-residuals``)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from cloudmatrix.catalog.residuals import METRIC_LABELS
from cloudmatrix.cli import common as cli

if TYPE_CHECKING:
    from rich.table import Table


def run_holdout(
    kind: str,
    corpora: list[str] | None,
    system: str | None,
    stack: str | None,
    role: str | None,
    jobs: int | None,
    write: bool,
    as_json: bool,
    console: Any,
    started: float,
) -> None:
    from cloudmatrix.catalog.residuals import stored_holdout_residuals, stored_residuals
    from cloudmatrix.cli.progress import LazyProgress
    from cloudmatrix.studies import holdout_score as score
    from cloudmatrix.studies.holdout import HOLDOUT_KINDS, corpus_rows, holdout
    from cloudmatrix.studies.validate import select

    kinds = [k.strip() for k in kind.split(",")]
    bad = next((k for k in kinds if k not in HOLDOUT_KINDS), None)
    if bad is not None:
        cli._fail(f"--holdout: '{bad}' is not one of: {', '.join(HOLDOUT_KINDS)} (or several, comma-separated)")
    pairs = cli._run(lambda: corpus_rows(corpora))
    keep = {r.id for r in cli._run(lambda: select([r for r, _ in pairs], system, stack, role))}
    pairs = [(r, c) for r, c in pairs if r.id in keep]
    if not pairs:
        cli._fail("no validation row matches the filters (--system, --stack, --role)")
    # the stored in-sample predictions stand for shipped rows whose constants a refit leaves unchanged
    baseline = None if corpora else {(r["id"], r["metric"]): r for r in stored_residuals()}
    memo: dict[Any, Any] = {}  # kinds share the runs that price a row with the same constants
    runs = []
    for k in dict.fromkeys(kinds):
        with LazyProgress(f"validating rows out of {k}") as progress:

            def one(kind: str = k, update: Any = progress.update) -> Any:
                return holdout(kind, pairs, baseline=baseline, jobs=jobs, progress=update, memo=memo)

            result = cli._run(one)
        if write:
            _write(k, result.entries)
        rows = score.nested(result.entries, stored_holdout_residuals())
        runs.append(
            {
                "holdout": k,
                "groups": {g: list(r.notes) for g, r in result.refits.items()},
                "summary": score.summary(rows),
                "rows": rows,
            }
        )
    if write:
        _write_index()
    wall = round(time.perf_counter() - started, 2)
    if as_json:
        cli._emit_json(runs[0] | {"wall_time_s": wall} if len(runs) == 1 else {"runs": runs, "wall_time_s": wall})
        return
    for d in runs:
        for table in holdout_tables(d):
            console.print(table)


def _write(kind: str, entries: list[dict[str, Any]]) -> None:
    """Replace this kind's rows of the stored out-of-group table (one residual a line: readable diffs)."""
    from cloudmatrix.catalog.residuals import HOLDOUT_PATH, stored_holdout_residuals
    from cloudmatrix.cli.output import write_file

    rows = [r for r in stored_holdout_residuals() if r.get("kind") != kind] + entries
    stored_holdout_residuals.cache_clear()  # the next kind's nested scoring reads what was just written
    head = {"generated_by": "cloudmatrix validate --holdout KIND --write-residuals (do not edit: regenerate)"}
    text = json.dumps(head)[:-1] + ', "rows": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]}\n"
    write_file(HOLDOUT_PATH, "--write-residuals", text, f" ({len(entries)} {kind} residuals, {len(rows)} in all)")


def _write_index() -> None:
    """The per-metric index of the stored out-of-group table that an answer's interval reads."""
    from cloudmatrix.catalog.holdout_index import INDEX_DIR, holdout_rows, index_texts
    from cloudmatrix.cli.output import write_file
    from cloudmatrix.studies.interval_pools import interval_rows

    INDEX_DIR.mkdir(exist_ok=True)
    for name, text in index_texts(interval_rows()).items():
        write_file(INDEX_DIR / name, "--write-residuals", text, " (interval index)")
    holdout_rows.cache_clear()


def _pct(v: float | None, lo: float | None = None, hi: float | None = None) -> str:
    """``75 %``, or with its Wilson interval ``75 % (72-78)``."""
    if v is None:
        return "–"
    return f"{v:.0%}" + ("" if lo is None or hi is None else f" ({lo * 100:.0f}-{hi * 100:.0f})")


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def holdout_tables(d: dict[str, Any]) -> list[Table]:
    """Per metric over all groups, then per group and metric; and what each group's refit did."""
    from rich.table import Table

    cols = ("rows", "median |err| %", "bias %", "coverage", "series-weighted", "unknown", "median width %")
    overall = Table(title=f"validate --holdout {d['holdout']}: 80 % intervals out of group, all groups")
    per_group = Table(title=f"validate --holdout {d['holdout']}: per group")
    overall.add_column("metric")
    per_group.add_column("group")
    per_group.add_column("metric")
    for t in (overall, per_group):
        for col in cols:
            t.add_column(col, justify="right")
    for metric, c in d["summary"]["metrics"].items():
        overall.add_row(METRIC_LABELS.get(metric, metric), *_cells(c))
    for c in d["summary"]["groups"]:
        per_group.add_row(c["group"], METRIC_LABELS.get(c["metric"], c["metric"]), *_cells(c))
    notes = Table(title="refits (constants fitted without each group's rows)")
    notes.add_column("group")
    notes.add_column("refit", overflow="fold")
    for group, lines in d["groups"].items():
        if lines:
            notes.add_row(group, "; ".join(lines))
    return [per_group, notes, overall]


def _cells(c: dict[str, Any]) -> list[str]:
    return [
        f"{c['answered']}/{c['rows']}",
        _num(c["median_abs_error_pct"]),
        _num(c["bias_pct"]),
        _pct(c["coverage"], c["coverage_lo"], c["coverage_hi"]),
        _pct(c["coverage_series"], c["coverage_series_lo"], c["coverage_series_hi"]),
        _pct(c["unknown_share"]),
        _num(c["median_width_pct"]),
    ]
