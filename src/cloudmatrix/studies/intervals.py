"""Prediction intervals from out-of-group error: empirical quantiles (split-conformal style) of measured /
predicted over the stored hold-out residuals (``validate --holdout KIND --write-residuals``), each row
predicted with constants refitted without its group. The interval is where the measured value is expected to
fall; where the twin is biased it need not contain the point prediction, and the bias is stated.

The residuals are split first by how the query's host times were obtained (``studies/interval_pools.py``):
fitted on rows of its own stack and family, or not (a default, a ``like:``, a hold-out that took every fit
row). Inside that pool, the base is stratified in a fixed fall-back order: (family x stack, model class,
concurrency band, ISL band), then without the ISL band, then without the concurrency band, then (family x
stack). A query outside the validated domain never gets a narrower interval than one a single condition
away inside it: the extrapolated attribute makes the base the envelope over every validated value of it (a
new family: every cell of the same stack; a stack new on a family: the family's cells and the stack's), and
each kind of step (a new family, a stack new on a family, a new model class or weight format, an ISL or
concurrency outside the validated ones) widens it to that kind's hold-out error, measured where the step is
taken alike, with the reason named. With no basis at all the answer is ``unknown``.

The exchangeable unit is the series (one deployment swept over concurrency): each weighs the same in the
quantiles, and a stratum needs rows from at least ``MIN_SERIES`` series as well as ``MIN_ROWS`` rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from cloudmatrix.catalog.hardware import chip_family
from cloudmatrix.catalog.holdout_index import holdout_rows
from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.catalog.residuals import FORMAT_PRECISION, conc_band, isl_band
from cloudmatrix.catalog.stacks import host_times_basis
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.studies.interval_pools import (
    MIN_ROWS,
    MIN_SERIES,
    STEP_COUNTERPART,
    Pool,
    Row,
    Table,
    enough,
    index_residuals,
    interval_rows,
    series_quantiles,
)

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
STEP_KINDS = ("family", "stack", "model", "isl", "band")  # hold-out kinds that measure a step outside


@dataclass(frozen=True, kw_only=True)
class Query:
    """What an answer's interval depends on. None: not stated, so the envelope over every validated value."""

    system: str
    stack: str | None
    metric: str
    model_class: str | None = None
    weights: str | None = None
    isl: int | None = None
    band: str | None = None  # the concurrency band, or ``steady``
    concurrency: int | None = None
    host_times: str | None = None  # ``fitted`` or ``unfitted``; None: as the catalog prices the stack


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


def _stored(metric: str) -> Table:
    if metric not in _STORED:
        counterpart = STEP_COUNTERPART.get(metric)
        indexed = [holdout_rows(m) for m in (metric, counterpart) if m]
        rows = interval_rows() if any(r is None for r in indexed) else [r for rs in indexed for r in rs or ()]
        _STORED[metric] = index_residuals(rows, metric)
    return _STORED[metric]


def _values(rows: Sequence[Row], name: str, wanted: str | None) -> list[str]:
    """The query's value where the rows have it, else every value they have (the envelope)."""
    present = sorted({str(r.get(name)) for r in rows})
    return [wanted] if wanted in present else present


def _fallback(rows: Sequence[Row], cls: str, band: str, isl: str) -> list[Row]:
    """The fixed fall-back inside one (family, stack) cell: class x band x ISL, class x band, class, cell."""
    for match in ({"model_class": cls, "band": band, "isl_band": isl}, {"model_class": cls, "band": band}):
        mine = [r for r in rows if all(str(r.get(k)) == v for k, v in match.items())]
        if enough(mine):
            return mine
    mine = [r for r in rows if str(r.get("model_class")) == cls]
    return mine if enough(mine) else list(rows)


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


def _cells(q: Query, t: Table, pool: Pool, family: str, reasons: list[str], steps: list[str]) -> list[list[Row]]:
    """The cells the base draws on: the query's own, or where its family or its stack on that family is
    outside the validated domain, the envelope over every validated cell one condition away (of either
    host-time basis: an answer outside the domain is never narrower than one a step inside it), or with none
    one condition away, over every validated cell. A cell with too few rows is thinly inside the domain: its
    own rows, beside the cells one condition away, or else the pool's cells merged (the fall-back's last
    level); a thin cell is also widened by the stack step."""
    key = (family, str(q.stack))
    if enough(pool.cells.get(key, [])):
        return [pool.cells[key]]
    validated = [(k, rows) for p in t.pools.values() for k, rows in p.cells.items() if enough(rows)]
    merged = [[r for rows in pool.cells.values() for r in rows]]
    if family not in {f for p in t.pools.values() for f, _ in p.cells}:
        reasons.append(f"chip family {family} has no rows")
        steps += ["family", "stack"]
        return [rows for k, rows in validated if k[1] == q.stack] or [rows for _, rows in validated]
    mine = [r for p in t.pools.values() for r in p.cells.get(key, [])]
    deployments = len({r["series"] for r in mine})
    reasons.append(
        f"stack {q.stack} has no rows on {family}"
        if not mine
        else f"stack {q.stack} has only {_count(len(mine), 'row')} from {_count(deployments, 'deployment')} on {family}"
    )
    steps.append("stack")
    near = [rows for k, rows in validated if k[0] == family or k[1] == q.stack]
    return [mine, *(near or merged)] if mine else near or [rows for _, rows in validated]


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _domain_steps(q: Query, t: Table, family: str, reasons: list[str], steps: list[str]) -> None:
    """Steps outside the validated model classes, weight formats, ISLs and concurrencies."""
    base = t.base
    if q.model_class is not None and q.model_class not in {r.get("model_class") for r in base}:
        reasons.append(f"model class {q.model_class} has no rows")
        steps.append("model")
    formats = {FORMAT_PRECISION.get(str(r.get("weights"))) for r in base if r["family"] == family}
    if q.weights is not None and FORMAT_PRECISION.get(q.weights, q.weights) not in formats:
        reasons.append(f"weights {q.weights} have no rows on {family}")
        steps.append("model")
    if q.isl is not None and isl_band(q.isl) not in {r.get("isl_band") for r in base}:
        isls = [r["isl"] for r in base if r.get("isl")]
        reasons.append(f"ISL {q.isl:,} {_where(q.isl, isls)}")
        steps.append("isl")
    if q.band is not None and q.band not in {r.get("band") for r in base}:
        concs = [r["concurrency"] for r in base if r.get("concurrency")]
        if q.band == "steady" or not concs:
            reasons.append(f"{'steady state' if q.band == 'steady' else q.band} has no rows")
        else:
            shown = f"{q.concurrency:,}" if q.concurrency else str(q.band)
            reasons.append(f"concurrency {shown} {_where(q.concurrency, concs)}")
        steps.append("band")


def _where(value: int | None, validated: Sequence[int]) -> str:
    """Where a query stands against the validated values of its kind: outside their range, or in a gap
    between them (its band has no rows although lengths on both sides do)."""
    if not validated:
        return "has no rows near it"
    if value is not None and min(validated) <= value <= max(validated):
        shown = ", ".join(f"{v:,}" for v in sorted(set(validated))[:8])
        return f"falls between the validated values ({shown}{', ...' if len(set(validated)) > 8 else ''})"
    return f"beyond the validated {_span(validated)}"


def _span(values: Sequence[int]) -> str:
    """``1,024-8,192`` (or one value)."""
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


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


# Where a step's error is measured alike: a new family under the same stack, a stack new on the same family,
# a new model class, ISL or concurrency in the same (family, stack) cell.
_STEP_ALIKE = {"family": ("stack",), "stack": ("family",), "model": ("family", "stack"), "isl": ("family", "stack")}
_STEP_ALIKE["band"] = _STEP_ALIKE["model"]


def _step_error(kind: str, pool: Pool, t: Table, family: str, stack: str) -> list[Row]:
    """The hold-out error of one kind of step, in a fixed fall-back order: measured where the step is taken
    alike (``_STEP_ALIKE``) on rows priced as the query is (the same host-time basis), then on every row
    priced so, then on every row, then on every row of the metric's end-to-end counterpart."""
    wanted = {"family": family, "stack": stack}
    alike = [r for r in pool.kinds.get(kind, []) if all(r[k] == wanted[k] for k in _STEP_ALIKE[kind])]
    for rows in (alike, pool.kinds.get(kind, []), t.kinds.get(kind, [])):
        if enough(rows):
            return rows
    return t.counterpart_kinds.get(kind, [])


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
    reasons: list[str] = []
    steps: list[str] = []
    try:
        basis = q.host_times or host_times_basis(q.stack, family)
    except CloudMatrixError:  # a stack the catalog lacks has no fitted host times
        basis = "unfitted"
    if basis == "unfitted":
        reasons.append(f"host times of {q.stack} are not fitted on {family}")
    pool = _pool(t, basis, reasons)
    cells = _cells(q, t, pool, family, reasons, steps) if pool.cells else []
    _domain_steps(q, t, family, reasons, steps)
    groups = [
        _fallback(rows, c, b, i)
        for rows in cells
        for c, b, i in product(
            _values(rows, "model_class", q.model_class),
            _values(rows, "band", q.band),
            _values(rows, "isl_band", isl_band(q.isl)),
        )
    ]
    if not groups:
        if not enough(t.base):
            return _unknown(coverage, len(t.base), f"fewer than {MIN_ROWS} hold-out rows from {MIN_SERIES} deployments")
        groups = [t.base]
    for kind in dict.fromkeys(steps):
        measured = _step_error(kind, pool, t, family, str(q.stack))
        if not enough(measured):
            return _unknown(coverage, len(t.base), f"no {kind} hold-out error measured for {q.metric}", reasons)
        groups.append(measured)
    levels = [(1 - coverage) / 2, (1 + coverage) / 2]
    bounds = [series_quantiles(g, levels) for g in groups]
    lo, hi = min(b[0] for b in bounds) * value, max(b[1] for b in bounds) * value
    used = {id(r): r for g in groups for r in g}
    bias = series_quantiles(groups[0], [0.5])[0] - 1
    note = ""
    if not lo <= value <= hi:
        note = f"the point lies outside its interval: measured values run {bias:+.0%} from the twin here"
    label = _label(groups[0], q.metric) if len(groups) == 1 else f"envelope of {len(groups)} strata x {q.metric}"
    return Interval(
        lo=lo,
        hi=hi,
        coverage=coverage,
        rows=len(used),
        stratum=label,
        note=note,
        extrapolating=tuple(reasons),
        bias_pct=bias * 100,
    )


def _label(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """The stratum's shared fields: ``blackwell x vllm x mla x conc 9-64 x tpot_ms``."""
    parts = []
    for name in ("family", "stack", "model_class", "band", "isl_band"):
        values = {r.get(name) for r in rows}
        if len(values) == 1:
            parts.append(str(values.pop()))
    return " x ".join(parts + [metric])


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
        model_class=cls,
        weights=q.get("weights"),
        isl=q.get("isl"),
        band=conc_band(conc, steady=bool(q.get("steady"))),
        concurrency=conc,
    )
