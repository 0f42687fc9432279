"""What `cloudmatrix report` shows, as one JSON-ready object: the verdict of CloudMatrix384 against GB200
NVL72 and their sweep (as ``compare --json`` and ``compare --sweep --json`` give them), the CloudMatrix384 at a
glance, `compare`
(the same object as ``compare --json``), the per-operator step of each system's operating point against its
roofline, `reproduce` (as ``reproduce --json``), the validation residuals and their error table (from the
stored residual table, or a saved ``validate --json`` run), and the planner's result when asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudmatrix.catalog.validation import RESIDUALS_PATH, stored_residuals
from cloudmatrix.studies.catalog_view import system_rows
from cloudmatrix.studies.compare import Conditions, operating_estimate
from cloudmatrix.studies.guard import guard_data
from cloudmatrix.studies.reproduce import reproduce
from cloudmatrix.studies.scoring import error_pct
from cloudmatrix.studies.sweep import SweepRequest, sweep
from cloudmatrix.studies.tco import compare_priced, system_hardware
from cloudmatrix.studies.validate import summary_cells
from cloudmatrix.studies.verdict import DEFAULT_PAIR, verdict

GLANCE_SYSTEM = "cloudmatrix384"
TOP_OPS = 8  # the step's largest operators are shown; the rest are summed as "other"
ERROR_GROUPINGS = ("all", "system x stack")

Progress = Callable[[int, int], None]  # (steps done, steps)


def glance() -> dict[str, Any]:
    """The CloudMatrix384's derived totals from the catalog, beside the rival systems' for scale."""
    rows = system_rows()
    return {"system": GLANCE_SYSTEM, "rows": rows, "focus": next(r for r in rows if r["id"] == GLANCE_SYSTEM)}


def breakdowns(results: list[Any], c: Conditions) -> dict[str, Any]:
    """Per feasible system: the operating point's step by operator (µs, largest first) and its roofline."""
    out = {}
    for r in results:
        if not r.feasible:
            continue
        est = operating_estimate(r, c)
        ops = sorted(est.step.breakdown_us.items(), key=lambda kv: -kv[1])
        shown = dict(ops[:TOP_OPS])
        rest = sum(us for _, us in ops[TOP_OPS:])
        if rest > 0:
            shown["other"] = rest
        roof = est.step.roofline_us
        out[r.system] = {
            "mode": r.mode,
            "batch_per_chip": r.batch_per_chip,
            "step_ms": est.step.step_s * 1e3,
            "roofline_step_ms": est.step.roofline_step_s * 1e3,
            "ops_us": shown,
            "roofline_us": {op: roof.get(op, 0.0) for op in shown if op != "other"},
        }
    return out


def residual_entries() -> list[dict[str, Any]]:
    """The stored residual table (the whole shipped corpus at its last regeneration) as validate entries."""
    entries = []
    for row in stored_residuals():
        predicted = row.get("predicted")
        err = (
            round(error_pct(predicted, row["measured"]), 2) if row["status"] == "ok" and predicted is not None else None
        )
        entries.append(row | {"error_pct": err})
    return entries


def validation(validate_run: dict[str, Any] | None) -> dict[str, Any]:
    """Parity entries and the error table: from a saved ``validate --json`` run, else the stored residuals
    (then also the CI subset's recorded medians, the figures the test suite guards)."""
    if validate_run is not None:
        entries = validate_run["rows"]
        cells = [c for c in validate_run["summary"]["cells"] if c["grouping"] in ERROR_GROUPINGS]
        return {"source": "a saved validate --json run", "entries": _slim(entries), "cells": cells, "guard": None}
    entries = residual_entries()
    return {
        "source": f"the stored residual table ({RESIDUALS_PATH.name})",
        "entries": _slim(entries),
        "cells": summary_cells(entries, ERROR_GROUPINGS),
        "guard": guard_data()["recorded"],
    }


def _slim(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("id", "system", "stack", "metric", "role", "status", "measured", "predicted", "error_pct")
    return [{k: e.get(k) for k in keys} for e in entries]


def report_data(
    c: Conditions,
    systems: list[str],
    validate_run: dict[str, Any] | None = None,
    plan: dict[str, Any] | None = None,
    progress: Progress | None = None,
    faults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    step = progress or (lambda _done, _total: None)
    data: dict[str, Any] = {"glance": glance()}
    step(1, 6)
    results, data["compare"] = compare_priced(systems, c)
    data["compare"]["verdict"] = verdict(data["compare"]["systems"], DEFAULT_PAIR)  # as `compare --json` has it
    step(2, 6)
    request = SweepRequest(pair=DEFAULT_PAIR, model=c.model)
    data["sweep"] = sweep(request, {s: system_hardware(s, {}) for s in DEFAULT_PAIR})
    step(3, 6)
    data["breakdown"] = breakdowns(results, c)
    step(4, 6)
    data["reproduce"] = reproduce("cloudmatrix-infer").to_dict()
    step(5, 6)
    data["validation"] = validation(validate_run)
    step(6, 6)
    if plan is not None:
        data["plan"] = plan
    if faults is not None:  # a simulated run with faults (report/fault_section.py)
        data["faults"] = faults
    return data
