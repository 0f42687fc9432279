"""Prediction intervals from out-of-group error: empirical quantiles (split-conformal style) of measured / predicted
over the stored hold-out residuals (``validate --holdout KIND --write-residuals``), each row predicted with
constants refitted without its group. Where the twin is biased the interval (where the measured value is expected)
need not contain the point prediction, and the bias is stated.

The residuals are split first by how the query's host times were obtained (``studies/interval_pools.py``): fitted on
rows of its own stack and family, or not (a default, a ``like:``, a hold-out that took every fit row); an answer on its
engine's priors alone (no row of any engine fits them) takes the hull of the unfitted interval and its priors-alone
residuals' (``studies/interval_prior.py``). Inside that pool,
the base is stratified in a fixed fall-back order: (family x stack, model class, concurrency band, ISL band), then
without the ISL band, then without the concurrency band, then (family x stack). Each step outside the validated domain
(a new family, or one with no validated cell; a stack new on a family; a new model class, weight format or model; an ISL
or concurrency outside the validated ones of the query's ecosystem, GPU or NPU; ``studies/interval_steps.py``) widens
the interval by that kind's hold-out error, measured where the step is taken alike, then in the query's ecosystem, only
then anywhere (rows priced on another host-time basis as the series hold-out predicted them), as a spread about the
prediction, with the reason named. Distinct kinds of step are independent sources of error
and add in quadrature, the in-domain error counted once and a step whose residuals a wider one holds not again; that
in-domain error is the query's own where its stratum measures one (a step measured on other cells' rows carries only
what it adds to theirs, ``interval_steps.transferred``). A step
another implies (a new family's formats; a stratum left empty by a family, stack or model with no rows anywhere) is
named but not counted again. An answer outside the domain is never narrower than one a single condition inside it: the
validated cells one condition away (``_answered``) set its least width. With no basis at all the answer is ``unknown``.

The exchangeable unit is the series (one deployment swept over concurrency): each weighs the same in the quantiles, and
a stratum needs rows from at least ``MIN_SERIES`` series as well as ``MIN_ROWS`` rows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloudmatrix.catalog.hardware import chip_family
from cloudmatrix.catalog.host_basis import host_times_basis
from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.catalog.residuals import conc_band
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.studies.interval_pools import (
    MIN_ROWS,
    MIN_SERIES,
    PRIOR,
    Pool,
    Row,
    Table,
    enough,
    index_residuals,
    interval_rows,
    series_quantiles,
    stored_table,
)
from cloudmatrix.studies.interval_prior import prior_error
from cloudmatrix.studies.interval_steps import (
    STEP_KINDS,
    Query,
    combined_spread,
    counted_steps,
    domain_steps,
    nearest_cells,
    own_spread,
    shape_spread,
    step_error,
    step_spreads,
)
from cloudmatrix.studies.interval_strata import label, strata

__all__ = ["STEP_KINDS", "Query", "Interval", "query_interval", "interval", "attach", "index_residuals"]

# Headline figures of each command (dotted path in its JSON) and the validation metric whose error they carry.
# Intervals are ratios (measured / predicted), so a figure normalised per decode chip or per chip of the
# whole deployment takes the same relative interval.
ESTIMATE_METRICS = {"throughput_per_chip_tok_s": "throughput_per_chip_tok_s", "tpot_ms": "tpot_ms"}
SIMULATE_METRICS = {
    "throughput_per_chip_tok_s.decode": "output_tok_s_per_chip",
    "tpot_ms.p50": "tpot_ms",
    "ttft_ms.p50": "ttft_ms",
    "ttft_ms.p99": "p99_ttft_ms",
}
COMPARE_METRICS = {
    "decode_tok_s_per_chip": "throughput_per_chip_tok_s",
    "output_tok_s_per_chip": "output_tok_s_per_chip",
    "tpot_ms": "tpot_ms",
    "ttft_ms": "ttft_ms",
}
PLAN_METRICS = {"output_tok_s_per_chip": "output_tok_s_per_chip", "tpot_ms": "tpot_ms", "ttft_ms": "ttft_ms"}
COVERAGE = 0.8


@dataclass(frozen=True, kw_only=True)
class Interval:
    lo: float | None
    hi: float | None
    coverage: float
    rows: int
    stratum: str | None
    note: str = ""
    extrapolating: tuple[str, ...] = ()
    bias_pct: float | None = None

    @property
    def unknown(self) -> bool:
        return self.lo is None or self.hi is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "lo": None if self.lo is None else round(self.lo, 4),
            "hi": None if self.hi is None else round(self.hi, 4),
            "coverage": self.coverage,
            "rows": self.rows,
            "stratum": self.stratum,
            "unknown": self.unknown,
            "bias_pct": None if self.bias_pct is None else round(self.bias_pct, 1),
            "extrapolating": list(self.extrapolating),
        }
        if self.note:
            d["note"] = self.note
        return d

    def label(self, fmt: str = ",.0f") -> str:
        """``1,850–2,210, 80 %`` or ``unknown``."""
        if self.lo is None or self.hi is None:
            return "unknown"
        return f"{self.lo:{fmt}}–{self.hi:{fmt}}, {self.coverage:.0%}"


_STORED: dict[str, Table] = {}
Cells = tuple[list[list[Row]], list[list[Row]]]  # the query's own cell, and the cells one condition away


def _stored(metric: str) -> Table:
    if metric not in _STORED:
        _STORED[metric] = stored_table(metric) or index_residuals(interval_rows(), metric)
    return _STORED[metric]


def _widened(lo: float, hi: float, near: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Never narrower than an answer one condition inside the domain: where the strata one condition away
    give a wider interval (as a ratio hi / lo) than the steps', widen it evenly in log to that width."""
    widest = max((b[1] / b[0] for b in near), default=0.0)
    if widest <= hi / lo:
        return lo, hi
    grow = math.sqrt(widest / (hi / lo))
    return lo / grow, hi * grow


def _pool(t: Table, basis: str, reasons: list[str]) -> Pool:
    """The query's pool: its host-time basis's, or where that has too few rows, every basis's merged."""
    pool = t.pools.get(basis)
    if pool is not None and enough(pool.base):
        return pool
    cells: dict[tuple[str, str], list[Row]] = {}
    for p in t.pools.values():
        for key, rows in p.cells.items():
            cells[key] = cells.get(key, []) + rows
    if basis == "unfitted" and any(p.base for p in t.pools.values()):
        reasons.append("too few rows predicted without fitted host times: all rows stand in")
    return Pool(cells=cells, kinds=t.kinds)


def _answered(t: Table) -> dict[tuple[str, str], list[Row]]:
    """Every validated (family, stack) cell as an answer for it would draw on it: the fitted pool's where it
    is validated there (its host times were fitted on its own rows: the series hold-out), else the pool it is
    validated in. A cell's residuals from hold-outs that took its fit rows are the errors of steps outside
    the domain, which a neighbour's answer inside it does not take."""
    out: dict[tuple[str, str], list[Row]] = {}
    for basis in sorted(t.pools, key=lambda b: b != "fitted"):
        for key, rows in t.pools[basis].cells.items():
            if key not in out and enough(rows):
                out[key] = rows
    return out


def _cells(q: Query, t: Table, pool: Pool, family: str, reasons: list[str], steps: list[str]) -> Cells:
    """The cells the base draws on: the query's own (``own``), or where its family or its stack on that
    family is outside the validated domain, every validated cell one condition away (``near``, each as an
    answer for it draws on it: ``_answered``), or with none one condition away, every validated cell. A
    family with rows but no validated cell (fewer than 8 rows from 3 deployments in every cell) counts as
    new. A cell with too few rows is thinly inside the domain: its own rows, beside the cells one condition
    away (or else the pool's cells merged: the fall-back's last level); a thin cell is also widened by the
    stack step."""
    key = (family, str(q.stack))
    if enough(pool.cells.get(key, [])):
        return [pool.cells[key]], []
    validated = list(_answered(t).items())
    merged = [[r for rows in pool.cells.values() for r in rows]]
    mine = [r for p in t.pools.values() for r in p.cells.get(key, [])]
    if family not in {f for f, _ in _answered(t)}:
        reasons.append(_new_family(t, family))
        steps += ["family", "stack"]
        near = [rows for k, rows in validated if k[1] == q.stack] or nearest_cells(t, q.system, validated)
        return ([mine] if mine else []), near
    deployments = len({r["series"] for r in mine})
    reasons.append(
        f"stack {q.stack} has no rows on {family}"
        if not mine
        else f"stack {q.stack} has only {_count(len(mine), 'row')} from {_count(deployments, 'deployment')} on {family}"
    )
    steps.append("stack")
    near = [rows for k, rows in validated if k[0] == family or k[1] == q.stack]
    return ([mine], near or merged) if mine else ([], near or nearest_cells(t, q.system, validated))


def _new_family(t: Table, family: str) -> str:
    """Why a family counts as new: it has no rows, or none of its cells is validated."""
    rows = [r for p in t.pools.values() for (f, _), cell in p.cells.items() if f == family for r in cell]
    if not rows:
        return f"chip family {family} has no rows"
    ids, series = len({r["id"] for r in rows}), len({r["series"] for r in rows})
    return (
        f"chip family {family} has no cell of {MIN_ROWS} rows from {MIN_SERIES} deployments "
        f"(only {_count(ids, 'row')} from {_count(series, 'deployment')})"
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _unknown(coverage: float, rows: int, why: str, reasons: Sequence[str] = ()) -> Interval:
    return Interval(
        lo=None,
        hi=None,
        coverage=coverage,
        rows=rows,
        stratum=None,
        note=f"unknown: {why}",
        extrapolating=tuple(reasons),
    )


def query_interval(
    value: float,
    q: Query,
    coverage: float = COVERAGE,
    residuals: Iterable[Row] | None = None,
    table: Table | None = None,
) -> Interval:
    """The interval around ``value`` (a prediction of ``q.metric``), from the hold-out residuals (default:
    the stored table; ``table``: an index of ``q.metric``'s residuals)."""
    if q.stack is None:
        return _unknown(coverage, 0, "no serving stack known for this system")
    t = table or (_stored(q.metric) if residuals is None else index_residuals(residuals, q.metric))
    family = chip_family(q.system)
    try:
        basis = q.host_times or host_times_basis(q.stack, family)
    except CloudMatrixError:  # a stack the catalog lacks has no fitted host times
        basis = "unfitted"
    iv, used = _answer(value, q, coverage, t, family, basis)
    return _with_priors(iv, used, value, q, coverage, t, family) if basis == PRIOR else iv


def _answer(value: float, q: Query, coverage: float, t: Table, family: str, basis: str) -> tuple[Interval, set[int]]:
    """The interval from the query's host-time pool (a priors-alone answer's: the unfitted one), and the rows
    it drew on (by identity)."""
    reasons: list[str] = []
    steps: list[str] = []
    if basis == "unfitted":
        reasons.append(f"host times of {q.stack} are not fitted on {family}")
    pool = _pool(t, "unfitted" if basis == PRIOR else basis, reasons)
    own, near = _cells(q, t, pool, family, reasons, steps) if pool.cells else ([], [])
    domain_steps(q, t, family, (own, near), reasons, steps)
    groups, floor = strata(q, own), strata(q, near)
    if not groups and not steps:
        if not enough(t.base):
            why = f"fewer than {MIN_ROWS} hold-out rows from {MIN_SERIES} deployments"
            return _unknown(coverage, len(t.base), why), set()
        groups = [t.base]
    levels = [(1 - coverage) / 2, (1 + coverage) / 2]
    bounds = [series_quantiles(g, levels) for g in groups]
    own_error = own_spread(groups, coverage) if own else None  # the query's own in-domain error
    measured, kinds = [], counted_steps(q, t, steps)
    for kind in kinds:
        rows = step_error(kind, pool, t, q.system, str(q.stack))
        if not enough(rows):
            return _unknown(coverage, len(t.base), f"no {kind} hold-out error measured for {q.metric}", reasons), set()
        groups.append(rows)
        measured.append(rows)
    spreads, inside = step_spreads(kinds, measured, t, q, own_error, coverage)
    if q.shapes:  # an op priced beyond its kernel's measured shape: the curves' own out-of-range error
        reasons.extend(q.shapes)
        spreads.append(shape_spread(coverage))
        inside.append(0.0)
    if spreads:
        spread = combined_spread(spreads, inside)
        bounds.append([math.exp(-spread), math.exp(spread)])
    widths = [series_quantiles(g, levels) for g in floor]
    lo, hi = (x * value for x in _widened(min(b[0] for b in bounds), max(b[1] for b in bounds), widths))
    used = {id(r) for g in [*groups, *floor] for r in g}
    bias = series_quantiles(groups[0], [0.5])[0] - 1
    name = label(groups[0], q.metric) if len(groups) == 1 else f"envelope of {len(groups)} strata x {q.metric}"
    return Interval(
        lo=lo,
        hi=hi,
        coverage=coverage,
        rows=len(used),
        stratum=name,
        note=_outside(value, lo, hi, bias),
        extrapolating=tuple(reasons),
        bias_pct=bias * 100,
    ), used


def _outside(value: float, lo: float, hi: float, bias: float) -> str:
    if lo <= value <= hi:
        return ""
    return f"the point lies outside its interval: measured values run {bias:+.0%} from the twin here"


def _with_priors(
    iv: Interval, used: set[int], value: float, q: Query, coverage: float, t: Table, family: str
) -> Interval:
    """A priors-alone answer: the hull of its unfitted interval and its priors-alone residuals' quantiles, with
    their bias where they are of its ecosystem (``interval_prior``); the unfitted one alone where too few rows
    were predicted so. Never narrower than the unfitted interval."""
    found = prior_error(t, q, family, coverage)
    reasons = (found.reason, *iv.extrapolating)
    if iv.lo is None or iv.hi is None or not found.rows:
        return replace(iv, extrapolating=reasons)
    lo, hi = min(iv.lo, value * found.lo), max(iv.hi, value * found.hi)
    bias = (iv.bias_pct or 0.0) / 100 if found.bias is None else found.bias
    return replace(
        iv,
        lo=lo,
        hi=hi,
        rows=len(used | {id(r) for r in found.rows}),
        stratum=f"{iv.stratum}, with the priors-alone rows{found.where}",
        note=_outside(value, lo, hi, bias),
        extrapolating=reasons,
        bias_pct=bias * 100,
    )


def interval(
    value: float,
    system: str,
    stack: str | None,
    metric: str,
    coverage: float = COVERAGE,
    residuals: Iterable[Mapping[str, Any]] | None = None,
) -> Interval:
    """The interval around ``value`` for a query that states only its system, stack and metric."""
    return query_interval(value, Query(system=system, stack=stack, metric=metric), coverage, residuals)


def _lookup(d: Mapping[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


def attach(
    d: dict[str, Any],
    system: str,
    metrics: Mapping[str, str],
    stack: str | None = None,
    query: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Add ``intervals`` to an output dict: for each headline figure at dotted ``path`` (mapped to its
    validation metric), ``{lo, hi, coverage, rows, stratum, unknown, bias_pct, extrapolating, metric}``.
    ``query`` states what else the answer depends on (``model``, ``weights``, ``isl``, ``concurrency``,
    ``steady``); what it leaves out takes the envelope over every validated value. Returns ``d``."""
    stack = stack or default_stack(system)
    q = dict(query or {})
    out = {}
    for path, metric in metrics.items():
        value = _lookup(d, path)
        if isinstance(value, int | float) and value > 0:
            iv = query_interval(float(value), _query(system, stack, metric, q))
            out[path] = iv.to_dict() | {"metric": metric}
    d["intervals"] = out
    return d


def _query(system: str, stack: str | None, metric: str, q: Mapping[str, Any]) -> Query:
    from cloudmatrix.catalog.models import load_model
    from cloudmatrix.catalog.residuals import model_class

    try:
        cls = model_class(load_model(q["model"])) if q.get("model") else None
    except CloudMatrixError:  # a model the catalog cannot read states no class: the envelope over all
        cls = None
    conc = q.get("concurrency")
    return Query(
        system=system,
        stack=stack,
        metric=metric,
        model=q.get("model"),
        model_class=cls,
        weights=q.get("weights"),
        isl=q.get("isl"),
        band=conc_band(conc, steady=bool(q.get("steady"))),
        concurrency=conc,
        shapes=tuple(q.get("shapes") or ()),
    )
