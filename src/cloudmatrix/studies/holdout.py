"""Out-of-group validation (``validate --holdout KIND``): for each group of one kind (a series, a system, a
chip family, a stack, a model, an ISL band, a concurrency band, a corpus), refit every constant fitted on its
rows without them, predict its rows with the refitted constants, and score them against intervals built only
from the other groups' own out-of-group errors (nested: a group never sees its own residuals).

The constants fitted on validation rows are the serving stacks' host times (``studies/stack_fit.py``),
SGLang-on-Ascend's graph cost per op and a family's own cost per op of a stack's captured graph (SGLang on CDNA;
both ``studies/graph_fit.py``); the other calibrated constants are fitted on the papers' rows and
microbenchmarks, never on validation rows. A refit (``studies/holdout_refit.py``) is an in-memory override
handed to the pricing (``catalog.stacks.overridden_costs``); where a group takes every fit row of a (stack,
family), that entry falls back to the stack's ``default`` entry (its pooled fit over the families left, or the
``like:`` stack it names); a stack left with no fit rows at all is priced with its own prior kernels per op
plus what the other engines' kept rows (on the same chip family, else on every family) pay per op beyond their
own priors (``stack_fit.fit_per_op(counted=...)``), so a model with more ops per step pays more, and with its
own prior request time. The costs per op are refitted the same way, under the group's refitted host
times; with none of their rows left, each falls back to the runtime's prior, fitted on no row: the engine's
tasks per op times the chip's cost per captured task or graph node (``graph_task_us``; SGLang-on-Ascend's
``graph.tasks_per_op``, SGLang-on-CDNA's family entry's), or to no cost per op where the entry states no count.
The group's notes say so."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.corpus import chip_family, load_rows
from cloudmatrix.catalog.host_basis import host_times_basis
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.residuals import isl_band, model_class
from cloudmatrix.catalog.stacks import (
    load_stack,
    overridden_costs,
    stack_graph,
)
from cloudmatrix.catalog.validation import ValidationRow, shipped_corpora
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.studies.graph_fit import (
    FAMILY_FIT_CORPORA,
    family_op_fit_rows,
    graph_fit_rows,
)
from cloudmatrix.studies.holdout_refit import GRAPH_STACK, Overrides, Refit, refit, with_graph_refit
from cloudmatrix.studies.stack_fit import FIT_CORPORA, fit_pairs
from cloudmatrix.studies.validate_run import RowOutcome, run_row

HOLDOUT_KINDS = ("series", "system", "family", "stack", "model", "isl", "band", "corpus")
Progress = Callable[[int, int], None]


def group_of(row: ValidationRow, kind: str, corpus: str = "") -> str:
    """The group a row belongs to under a hold-out kind."""
    keys = {
        "series": row.series,
        "system": row.system,
        "family": chip_family(row.system),
        "stack": row.stack,
        "model": row.model,
        "isl": isl_band(row.workload.input_len) or "",
        "band": row.concurrency_band,
        "corpus": corpus,
    }
    return keys[kind]


def corpus_rows(names: list[str] | None = None) -> list[tuple[ValidationRow, str]]:
    """Every row of the corpora (default: every shipped one) with its corpus id."""
    return [(r, name) for name in names or shipped_corpora() for r in load_rows(name)]


def _run_task(task: tuple[ValidationRow, Overrides]) -> RowOutcome:
    row, overrides = task
    with overridden_costs(overrides):
        return run_row(row)


def run_tasks(
    tasks: Sequence[tuple[ValidationRow, Overrides]], jobs: int | None = None, progress: Progress | None = None
) -> list[RowOutcome]:
    """Each row under its group's constants, over ``jobs`` processes; outcomes in task order."""
    workers = max(min(jobs or os.cpu_count() or 1, len(tasks)), 1)
    if workers == 1:
        out = []
        for i, t in enumerate(tasks):
            out.append(_run_task(t))
            if progress:
                progress(i + 1, len(tasks))
        return out
    results: list[RowOutcome | None] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_task, t): i for i, t in enumerate(tasks)}
        for done, fut in enumerate(as_completed(futures), start=1):
            results[futures[fut]] = fut.result()
            if progress:
                progress(done, len(tasks))
    return [r for r in results if r is not None]


def _priced_with(row: ValidationRow, overrides: Overrides) -> str:
    """The stack constants this row is priced with under ``overrides`` (a key: equal keys, equal answers)."""
    with overridden_costs(overrides):
        graph = stack_graph(row.stack)
        costs = load_stack(row.stack).costs(chip_family(row.system)).model_dump_json()
        return costs + ("" if graph is None else graph.model_dump_json())


# (row id, constants it is priced with) -> outcome: kinds run in one process share their runs (a family and
# a stack held out often leave a row the same fall-back constants)
Memo = dict[tuple[str, str], RowOutcome]


def residual_entry(
    row: ValidationRow, kind: str, group: str, metric: str, outcome: RowOutcome, overrides: Overrides | None = None
) -> dict[str, Any]:
    """One row and metric of the out-of-group table, with every field an interval's strata read (the host
    times' basis as the row was priced: under its group's refit ``overrides``)."""
    predicted = outcome.predicted.get(metric)
    with overridden_costs(overrides or {}):
        host = host_times_basis(row.stack, chip_family(row.system))
    return {
        "kind": kind,
        "group": group,
        "id": row.id,
        "series": row.series,
        "system": row.system,
        "family": chip_family(row.system),
        "stack": row.stack,
        "model": row.model,
        "model_class": _class(row.model),
        "weights": row.weights,
        "isl": row.workload.input_len,
        "isl_band": isl_band(row.workload.input_len),
        "concurrency": row.workload.concurrency,
        "band": row.concurrency_band,
        "host_times": host,
        "metric": metric,
        "role": row.role,
        "status": outcome.status,
        "measured": row.measured[metric],  # type: ignore[index]
        "predicted": None if predicted is None else round(predicted, 4),
    }


@dataclass(frozen=True, kw_only=True)
class Holdout:
    """Every row predicted out of its group: the out-of-group table and each group's refit notes."""

    kind: str
    entries: list[dict[str, Any]]
    refits: dict[str, Refit]


def holdout(
    kind: str,
    rows: Sequence[tuple[ValidationRow, str]],
    *,
    baseline: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    fit_source: Sequence[tuple[ValidationRow, str]] | None = None,
    memo: Memo | None = None,
) -> Holdout:
    """Predict each row out of its group. ``fit_source``: the rows (with their corpus) the catalog's
    constants were fitted on (default: the rows of ``FIT_CORPORA``, as the catalog's fit); a group is held
    out whole from them even where only some of its rows are scored. ``baseline`` maps (row id, metric) to
    a stored in-sample residual: a row whose constants the refit leaves unchanged takes its prediction from
    there instead of running."""
    universe = list(fit_source) if fit_source is not None else [(r, c) for r, c in corpus_rows() if c in FIT_CORPORA]
    fits = fit_pairs([r for r, _ in universe])
    op_fits = family_op_fit_rows()
    groups: dict[str, list[ValidationRow]] = {}
    for row, corpus in rows:
        groups.setdefault(group_of(row, kind, corpus), []).append(row)
    held: dict[str, set[str]] = {g: {r.id for r in members} for g, members in groups.items()}
    op_ids = {r.id for rs in op_fits.values() for r in rs}
    op_universe = [(r, c) for c in FAMILY_FIT_CORPORA for r in load_rows(c) if r.id in op_ids]
    for row, corpus in [*universe, *op_universe, *graph_fit_rows(GRAPH_STACK)]:
        held.get(group_of(row, kind, corpus), set()).add(row.id)
    refits = {g: with_graph_refit(refit(fits, held[g], op_fits), held[g]) for g in groups}
    memo = {} if memo is None else memo
    outcomes: dict[str, RowOutcome] = {}
    tasks, keys = [], []
    for g, members in groups.items():
        for row in members:
            key = (row.id, _priced_with(row, refits[g].overrides))
            stored = _stored(row, baseline) if key[1] == _priced_with(row, {}) else None
            if key in memo or stored is not None:
                outcomes[row.id] = memo.get(key) or stored  # type: ignore[assignment]
            else:
                tasks.append((row, refits[g].overrides))
                keys.append(key)
    for key, outcome in zip(keys, run_tasks(tasks, jobs, progress), strict=True):
        outcomes[key[0]] = memo[key] = outcome
    entries = [
        residual_entry(row, kind, g, metric, outcomes[row.id], refits[g].overrides)
        for g, members in groups.items()
        for row in members
        for metric in row.measured
    ]
    return Holdout(kind=kind, entries=entries, refits=refits)


def _stored(row: ValidationRow, baseline: Mapping[tuple[str, str], Mapping[str, Any]] | None) -> RowOutcome | None:
    """The row's stored in-sample outcome, where every measured metric of it is stored."""
    if baseline is None:
        return None
    found = [baseline.get((row.id, m)) for m in row.measured]
    if any(e is None for e in found):
        return None
    if any(e["status"] != "ok" for e in found if e):
        return RowOutcome(row_id=row.id, reason="refused in the stored in-sample run")
    return RowOutcome(
        row_id=row.id, predicted={m: float(e["predicted"]) for m, e in zip(row.measured, found, strict=True) if e}
    )


def validation_entries(rows: Sequence[ValidationRow], entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``validate``'s entries (row x metric, in row order) with the fields an interval's strata read."""
    by_id = {r.id: r for r in rows}
    out = []
    for e in entries:
        row = by_id[e["id"]]
        out.append(
            dict(e)
            | {
                "model_class": _class(row.model),
                "weights": row.weights,
                "isl": row.workload.input_len,
                "isl_band": isl_band(row.workload.input_len),
                "host_times": host_times_basis(row.stack, chip_family(row.system)),
            }
        )
    return out


def _class(model: str) -> str | None:
    """A row's model class (None for a model the catalog lacks: that row is refused anyway)."""
    try:
        return model_class(load_model(model))
    except CloudMatrixError:
        return None
