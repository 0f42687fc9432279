"""`cloudmatrix validate`: every row of the validation corpora run the way it was measured, scored against its
measurement, and summarised by role, system, stack, metric and concurrency band (design.md §6)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.corpus import chip_family, load_corpora
from cloudmatrix.catalog.validation import BANDS, METRICS, ROLES, ValidationRow
from cloudmatrix.errors import ConfigError
from cloudmatrix.studies.scoring import error_pct, error_stats
from cloudmatrix.studies.validate_run import RowOutcome, run_row

Progress = Callable[[int, int], None]
# Runs rows in order and returns one outcome per row (the in-process pool, or Ray from the CLI).
Executor = Callable[[Sequence[ValidationRow], Progress | None], list[RowOutcome]]
GROUPINGS = ("all", "system", "stack", "system x stack", "band")


def select(
    rows: list[ValidationRow], system: str | None = None, stack: str | None = None, role: str | None = None
) -> list[ValidationRow]:
    if role is not None and role not in ROLES:
        raise ConfigError(f"role '{role}' is not one of: {', '.join(ROLES)}")
    return [
        r
        for r in rows
        if (system is None or r.system == system)
        and (stack is None or r.stack == stack)
        and (role is None or r.role == role)
    ]


def _cost(row: ValidationRow) -> float:
    """A rough cost (simulated tokens) to start the longest rows first, so the pool finishes together."""
    w = row.workload
    return float((w.num_requests or 1) * (w.output_len + w.input_len / 8)) if row.kind == "e2e" else 0.0


def run_in_pool(jobs: int | None = None) -> Executor:
    """Rows over ``jobs`` processes (default: every core); outcomes come back in row order."""

    def run(rows: Sequence[ValidationRow], progress: Progress | None) -> list[RowOutcome]:
        workers = max(min(jobs or os.cpu_count() or 1, len(rows)), 1)
        if workers == 1:
            out = []
            for i, r in enumerate(rows):
                out.append(run_row(r))
                if progress:
                    progress(i + 1, len(rows))
            return out
        order = sorted(range(len(rows)), key=lambda i: -_cost(rows[i]))
        results: list[RowOutcome | None] = [None] * len(rows)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_row, rows[i]): i for i in order}
            for done, fut in enumerate(as_completed(futures), start=1):
                results[futures[fut]] = fut.result()
                if progress:
                    progress(done, len(rows))
        return [r for r in results if r is not None]

    return run


def run_chunk(rows: list[ValidationRow]) -> list[RowOutcome]:
    """A chunk of rows in order (what a Ray task runs)."""
    return [run_row(r) for r in rows]


@dataclass(frozen=True, kw_only=True)
class Validation:
    rows: list[ValidationRow]
    outcomes: list[RowOutcome]

    def entries(self) -> list[dict[str, Any]]:
        """One entry per row and measured metric (the ``--json`` contract)."""
        out = []
        for row, o in zip(self.rows, self.outcomes, strict=True):
            for metric, measured in row.measured.items():
                predicted = o.predicted.get(metric)
                out.append(
                    {
                        "id": row.id,
                        "source": row.source,
                        "system": row.system,
                        "model": row.model,
                        "stack": row.stack,
                        "role": row.role,
                        "metric": metric,
                        "measured": measured,
                        "predicted": None if predicted is None else round(predicted, 4),
                        "error_pct": None if predicted is None else round(error_pct(predicted, measured), 2),
                        "status": o.status,
                        "reason": o.reason,
                        "series": row.series,
                        "family": chip_family(row.system),
                        "band": row.concurrency_band,
                        "concurrency": row.workload.concurrency,
                        "mtp": row.mtp,
                        "note": o.note,
                    }
                )
        return out

    def summary(self) -> dict[str, Any]:
        entries = self.entries()
        cells = summary_cells(entries)
        refused = sorted({(e["id"], e["reason"]) for e in entries if e["status"] == "refused"})
        return {
            "batch_scaling": {role: batch_scaling([e for e in entries if e["role"] == role]) for role in ROLES},
            "rows": len(self.rows),
            "answered_rows": sum(o.status == "ok" for o in self.outcomes),
            "by_role": {role: sum(r.role == role for r in self.rows) for role in ROLES},
            "cells": cells,
            "refused": [{"id": i, "reason": why} for i, why in refused],
        }

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.entries(), "summary": self.summary()}


def summary_cells(entries: list[dict[str, Any]], groupings: Sequence[str] = GROUPINGS) -> list[dict[str, Any]]:
    """Error statistics per role, grouping key and metric over entries with an ``error_pct`` (None:
    refused): the cells of ``validate``'s summary, and of the report's error table."""
    cells = []
    for role in ROLES:
        mine = [e for e in entries if e["role"] == role]
        for grouping in groupings:
            for key, members in _groups(mine, grouping).items():
                for metric in METRICS:
                    errs = [e["error_pct"] for e in members if e["metric"] == metric]
                    if errs:
                        cells.append(
                            {"role": role, "grouping": grouping, "key": key, "metric": metric}
                            | error_stats(errs).to_dict()
                        )
    return cells


def batch_scaling(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """How TPOT grows with the batch: per series swept over concurrency, g = TPOT at its highest concurrency
    over TPOT at its lowest, measured and predicted; the median over series of |g_predicted / g_measured - 1|
    (0: the twin's step grows with its batch exactly as measured)."""
    by_series: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if e["metric"] == "tpot_ms" and e["status"] == "ok" and e["concurrency"]:
            by_series.setdefault(e["series"], []).append(e)
    devs, measured = [], []
    for members in by_series.values():
        lo = min(members, key=lambda e: e["concurrency"])
        hi = max(members, key=lambda e: e["concurrency"])
        if hi["concurrency"] > lo["concurrency"]:
            g_meas = hi["measured"] / lo["measured"]
            devs.append(abs(hi["predicted"] / lo["predicted"] / g_meas - 1))
            measured.append(g_meas)
    if not devs:
        return {"series": 0}
    return {
        "series": len(devs),
        "median_abs_deviation": round(statistics.median(devs), 4),
        "median_measured_growth": round(statistics.median(measured), 4),
    }


def _groups(entries: list[dict[str, Any]], grouping: str) -> dict[str, list[dict[str, Any]]]:
    def key(e: dict[str, Any]) -> str:
        if grouping == "all":
            return "all"
        if grouping == "system x stack":
            return f"{e['system']} x {e['stack']}"
        return str(e[grouping])

    out: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        out.setdefault(key(e), []).append(e)
    order = [label for _, label in BANDS] + ["open-loop", "steady"]
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else -1, kv[0])))


def validate(
    corpora: list[str] | None = None,
    *,
    system: str | None = None,
    stack: str | None = None,
    role: str | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> Validation:
    rows = select(load_corpora(corpora), system, stack, role)
    if not rows:
        raise ConfigError("no validation row matches the filters (--system, --stack, --role)")
    outcomes = (executor or run_in_pool())(rows, progress)
    return Validation(rows=rows, outcomes=outcomes)
