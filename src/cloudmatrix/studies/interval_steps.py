"""The steps a query takes outside the validated domain, and the out-of-group error each kind of step costs.

A step is a condition of the query with no validated rows: a chip family, a stack on a family (found by
``intervals._cells``), a model class, a weight format, the model itself in its stratum, an ISL or a
concurrency (found here); and an op priced beyond its kernel's measured shape (``shape_spread``). Each kind
is measured by its own hold-out (``validate --holdout KIND``): the residuals of groups predicted without any
of their rows, which is what the query's step is (the shape step: the kernel curves' own out-of-range error).

A step's error is taken as a spread, not a shift: the series-weighted quantile of |log(measured /
predicted)| over the step's hold-out rows, applied on both sides of the prediction (the absolute-residual
score of split-conformal prediction). The hold-out groups of one kind are biased in different directions
(one model's host-time fit makes the twin too fast on another and too slow on a third), so the bias of the
groups measured says how far a new group lands, not which way; only the base, drawn from the query's own
stratum, keeps a bias.

Each step is judged and measured on the query's ecosystem first (the chips of the vendors its engines run on:
GPU or NPU): a GPU answer takes no NPU's error while GPUs have rows for the step, nor the reverse; and where a
step's error stands on rows not all of the query's vendor, it is never narrower than that vendor's own hold-out
error of the kind (``vendor_floor``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from cloudmatrix.catalog.hardware import chip_family, system_vendor
from cloudmatrix.catalog.residuals import FORMAT_PRECISION, isl_band
from cloudmatrix.catalog.stacks import load_stack, stack_ids
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.studies.interval_pools import BASE_KIND, Pool, Row, Table, enough, priced, series_quantiles

STEP_KINDS = ("family", "stack", "model", "isl", "band")  # hold-out kinds that measure a step outside


@dataclass(frozen=True, kw_only=True)
class Query:
    """What an answer's interval depends on. None: not stated, so the envelope over every validated value."""

    system: str
    stack: str | None
    metric: str
    model: str | None = None  # the model (a catalog id or config); the same architecture counts as the same
    model_class: str | None = None
    weights: str | None = None
    isl: int | None = None
    band: str | None = None  # the concurrency band, or ``steady``
    concurrency: int | None = None
    host_times: str | None = None  # ``fitted``, ``unfitted`` or ``prior``; None: as the catalog prices the stack
    shapes: tuple[str, ...] = ()  # ops priced outside their kernel's measured shape (cost/shape_range.py)


def domain_steps(
    q: Query,
    t: Table,
    family: str,
    cells: tuple[Sequence[Sequence[Row]], Sequence[Sequence[Row]]],
    reasons: list[str],
    steps: list[str],
) -> None:
    """Steps outside the validated model classes, weight formats, models, ISLs and concurrencies; ``cells``
    are the (family x stack) cells the base draws on, the query's stratum: its own, or where it has none,
    those one condition away. A class, ISL or concurrency is validated by rows of the query's ecosystem
    (``ecosystem_rows``): a 64K prompt measured on an NPU says nothing of a GPU's at 64K."""
    base, scope = ecosystem_rows(t, t.base, q.system)
    if q.model_class is not None and q.model_class not in {r.get("model_class") for r in base}:
        reasons.append(f"model class {q.model_class} has no rows{scope}")
        steps.append("model")
    # a family counted new is new in every format: its hold-out error holds that step (no second count)
    formats = {FORMAT_PRECISION.get(str(r.get("weights"))) for r in base if r["family"] == family}
    new_format = FORMAT_PRECISION.get(str(q.weights), q.weights) not in formats
    if q.weights is not None and "family" not in steps and new_format:
        reasons.append(f"weights {q.weights} have no rows on {family}")
        steps.append("model")
    own, near = cells
    if q.model is not None and "model" not in steps and not _has_model(q.model, own or near):
        reasons.append(
            f"model {q.model} has no rows on {q.stack} on {family}"
            if own
            else f"model {q.model} has no rows in the cells one condition away"
        )
        steps.append("model")
    if q.isl is not None and isl_band(q.isl) not in {r.get("isl_band") for r in base}:
        isls = [r["isl"] for r in base if r.get("isl")]
        reasons.append(f"ISL {q.isl:,} {_where(q.isl, isls)}{scope}")
        steps.append("isl")
    if q.band is not None and q.band not in {r.get("band") for r in base}:
        concs = [r["concurrency"] for r in base if r.get("concurrency")]
        if q.band == "steady" or not concs:
            reasons.append(f"{'steady state' if q.band == 'steady' else q.band} has no rows{scope}")
        else:
            shown = f"{q.concurrency:,}" if q.concurrency else str(q.band)
            reasons.append(f"concurrency {shown} {_where(q.concurrency, concs)}{scope}")
        steps.append("band")


def _has_model(model: str, cells: Sequence[Sequence[Row]]) -> bool:
    """Whether any row of the stratum is of the query's model (or one of the same architecture)."""
    mine = architecture(model)
    names = {str(r.get("model")) for rows in cells for r in rows if r.get("model")}
    return any(architecture(name) == mine for name in names)


@cache
def architecture(model: str) -> Any:
    """What the twin prices of a model: its spec without its name and source (DeepSeek-V3 and R1 are one
    architecture); the name itself for a model the catalog cannot read."""
    from dataclasses import replace

    from cloudmatrix.catalog.models import load_model  # the estimate path reads models only where it must

    try:
        return replace(load_model(model), id="", source="", checkpoint_format=None)
    except CloudMatrixError:
        return model


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


# Where a step's error is measured alike: a new family under the same stack, a stack new on the same family,
# a new model class, ISL or concurrency in the same (family, stack) cell.
_STEP_ALIKE = {"family": ("stack",), "stack": ("family",), "model": ("family", "stack"), "isl": ("family", "stack")}
_STEP_ALIKE["band"] = _STEP_ALIKE["model"]


def step_error(kind: str, pool: Pool, t: Table, system: str, stack: str) -> list[Row]:
    """The hold-out error of one kind of step, in a fixed fall-back order: measured where the step is taken
    alike (``_STEP_ALIKE``) on rows priced as the query is (the same host-time basis), then on every row of
    the query's ecosystem priced so (the chips of the vendors its engines run on, ``engine_vendors``), then
    where it is taken alike on every row as a query of that basis meets it (``_as_priced``), then on every
    row of the ecosystem so; only then outside the ecosystem (every row priced so, every row as priced), and
    last on every row of the metric's end-to-end counterpart. A step's error is the device model's and the
    engine's away from their evidence: a GPU query takes the GPUs' error before an NPU's, whose kernels,
    graphs and engines are others (and the reverse), as the issue's strata put the chip family first. Alike
    comes first at each level: a fitted query at a new ISL whose hold-out rows were all priced on another
    basis takes them as the series hold-out predicted them in its own (family, stack) cell, not every
    cell's."""
    wanted = {"family": chip_family(system), "stack": stack}
    peers = engine_vendors(system_vendor(system))
    every = t.kinds.get(kind, [])
    priced = pool.kinds.get(kind, [])
    alike, alike_every = (
        [r for r in rows if all(r[k] == wanted[k] for k in _STEP_ALIKE[kind])] for rows in (priced, every)
    )
    mine, mine_every = ([r for r in rows if t.vendor(r) in peers] for rows in (priced, every))
    levels = (alike, mine, _as_priced(alike_every, pool, t), _as_priced(mine_every, pool, t))
    for rows in (*levels, priced, _as_priced(every, pool, t)):
        if enough(rows):
            return rows
    return t.counterpart_kinds.get(kind, [])


def vendor_floor(kind: str, rows: Sequence[Row], t: Table, system: str, coverage: float) -> float:
    """Where a step's error stands on rows that are not all of the query's vendor's chips (its own had too few
    for a stratum), the least spread it may take: that vendor's own hold-out error of that kind, however few
    its rows, on the metric and its end-to-end counterpart together (one step's per-chip throughput is what a
    run's is made of). An answer on Ascend is never narrower than what the twin missed by on Ascend held out
    (its SGLang-on-A3 throughput 20-43 % high), nor one on MI355X than on CDNA held out. Zero where the step's
    rows are all the vendor's, or where it has none."""
    maker = system_vendor(system)
    if all(t.vendor(r) == maker for r in rows):
        return 0.0
    mine = [r for kinds in (t.kinds, t.counterpart_kinds) for r in kinds.get(kind, []) if t.vendor(r) == maker]
    return step_spread(mine, coverage) if mine else 0.0


def nearest_cells(t: Table, system: str, validated: Sequence[tuple[tuple[str, str], list[Row]]]) -> list[list[Row]]:
    """With no validated cell one condition away: the validated cells of the query's ecosystem, or where it
    has none, every validated cell. A GPU answer takes no NPU cell's width while GPUs have one, nor the
    reverse."""
    peers = engine_vendors(system_vendor(system))
    mine = [rows for _, rows in validated if t.vendor(rows[0]) in peers]
    return mine or [rows for _, rows in validated]


def ecosystem_rows(t: Table, rows: Sequence[Row], system: str) -> tuple[list[Row], str]:
    """The rows of ``system``'s ecosystem (``engine_vendors``), and where that left others out, where they
    are (`` on amd or nvidia chips``); every row where the ecosystem has none."""
    peers = engine_vendors(system_vendor(system))
    mine = [r for r in rows if t.vendor(r) in peers]
    if not mine or len(mine) == len(rows):
        return list(rows), ""
    return mine, f" on {' or '.join(sorted(peers))} chips"


@cache
def engine_vendors(maker: str) -> frozenset[str]:
    """The vendors whose chips run an engine that also runs on ``maker``'s (NVIDIA's and AMD's share vLLM and
    SGLang builds; Ascend's engines run on Ascend alone): one ecosystem of kernels and host code."""
    runs = [set(load_stack(s).runs_on.vendors) for s in stack_ids()]
    return frozenset({maker}.union(*(v for v in runs if maker in v)))


def _as_priced(rows: Sequence[Row], pool: Pool, t: Table) -> list[Row]:
    """A kind's rows as a query priced on ``pool``'s host-time basis meets their error. A row its hold-out
    priced on another basis (the ISL hold-out of the band holding every fit row prices it with no host time
    at all) holds that basis's error with the step's: the loss of host times that a query whose own are
    fitted does not take. It stands as the series hold-out predicted it (the step's rows as a new deployment
    of validated things), or as it is where it has no such residual. A merged pool (the query's basis had too
    few rows) draws on every basis as it is."""
    basis = next((b for b, p in t.pools.items() if p is pool), None)
    series = {r["id"]: r for r in t.kinds.get(BASE_KIND, [])} if basis else {}
    return [r if priced(r, basis) else series.get(r["id"], r) for r in rows]


def step_spread(rows: Sequence[Row], coverage: float) -> float:
    """A step's error as a spread in log: ``coverage`` of the step's rows lie within a factor e^spread of
    the prediction (series-weighted), on either side."""
    return series_quantiles(rows, [coverage], score=lambda r: abs(math.log(r["measured"] / r["predicted"])))[0]


def combined_spread(spreads: Sequence[float], inside: Sequence[float] | None = None) -> float:
    """Several kinds of step at once (a new family and a new model; a cell with no rows on a family with none,
    which no hold-out measures whole: leave-stack-and-family-out, as the family and stack steps): independent
    sources of error, so their spreads in log add in quadrature, wider than any one alone and narrower than
    their sum (the union of their intervals, as before, counted only the widest). Each step's hold-out error
    also holds the in-domain error every answer meets (``inside``: its rows' error as a new deployment of
    validated things), which is one source, not one per step: the widest step counts whole, each other only
    what its hold-out adds to that, q_k^2 - q0_k^2 (nothing where its rows err no more out of group)."""
    inside = list(inside) if inside is not None else [0.0] * len(spreads)
    widest = max(range(len(spreads)), key=lambda i: spreads[i])
    added = sum(max(s * s - d * d, 0.0) for i, (s, d) in enumerate(zip(spreads, inside, strict=True)) if i != widest)
    return math.sqrt(spreads[widest] ** 2 + added)


def own_spread(strata: Sequence[Sequence[Row]], coverage: float) -> float | None:
    """The query's own in-domain error: the widest spread of its own strata that hold enough rows to be
    measured (``enough``); None where none does (a thin cell's few rows measure no error)."""
    measured = [step_spread(rows, coverage) for rows in strata if enough(rows)]
    return max(measured) if measured else None


def in_cell(rows: Sequence[Row], family: str, stack: str) -> bool:
    """Whether every row of a step lies in the query's own (family, stack) cell."""
    return all(r["family"] == family and r["stack"] == stack for r in rows)


def transferred(spread: float, inside: float, own: float) -> float:
    """A step measured on other cells' rows, as it carries to a query with an in-domain error of its own: what
    the step adds to those rows' own in-domain error (q_k^2 - q0_k^2, nothing where they err no more out of
    group), on top of the query's in-domain error, not theirs."""
    return math.sqrt(max(spread * spread - inside * inside, 0.0) + own * own)


def step_spreads(
    kinds: Sequence[str], measured: Sequence[Sequence[Row]], t: Table, q: Query, own: float | None, coverage: float
) -> tuple[list[float], list[float]]:
    """Each counted step's spread and the in-domain error it holds (``combined_spread``'s two lists). A step whose
    every residual a wider step counts is that step's source, not another (``independent_steps``). A step measured
    on rows outside the query's own (family, stack) cell, where the query's own stratum measures its in-domain
    error (``own``), carries only what it adds to those rows' in-domain error on top of the query's
    (``transferred``): the step's hold-out rows erred as new deployments of their own cell too, and that part is
    their cell's error (Dynamo + TensorRT-LLM's queueing above 512 clients), not the query's."""
    family, spreads, inside = chip_family(q.system), [], []
    for kind, rows, counts in zip(kinds, measured, independent_steps(measured, coverage), strict=True):
        if not counts:
            continue
        spread, domain = step_spread(rows, coverage), in_domain_spread(t, rows, coverage)
        if own is not None and not in_cell(rows, family, str(q.stack)):
            spread, domain = transferred(spread, domain, own), own
        spreads.append(max(spread, vendor_floor(kind, rows, t, q.system, coverage)))
        inside.append(domain)
    return spreads, inside


def independent_steps(measured: Sequence[Sequence[Row]], coverage: float) -> list[bool]:
    """Which steps count as a source of error of their own: all but a step every residual of which a wider
    step already counts (the same row at the same prediction: one draw of one error source that two hold-outs
    met alike, as when holding out a model took every fit row of its stack, so the model and stack hold-outs
    priced that stack's rows the same way). Steps that share only part of their residuals count whole."""
    order = sorted(range(len(measured)), key=lambda i: -step_spread(measured[i], coverage))
    seen: set[tuple[Any, Any, float]] = set()
    counts = [True] * len(measured)
    for i in order:
        mine = {_residual(r) for r in measured[i]}
        counts[i] = not mine <= seen
        seen |= mine
    return counts


def _residual(row: Row) -> tuple[Any, Any, float]:
    return row["id"], row.get("metric"), round(float(row["predicted"]), 6)


def in_domain_spread(t: Table, measured: Sequence[Row], coverage: float) -> float:
    """The in-domain part of a step's error: its rows as the series hold-out predicted them (each a new
    deployment of a validated family, stack and model: the least error any answer meets), or where too few of
    them were, every series hold-out row of their metric; none where there are no such rows."""
    metric = measured[0].get("metric") if measured else None
    series = [r for kinds in (t.kinds, t.counterpart_kinds) for r in kinds.get(BASE_KIND, []) if r["metric"] == metric]
    ids = {r["id"] for r in measured}
    mine = [r for r in series if r["id"] in ids]
    rows = mine if enough(mine) else series
    return step_spread(rows, coverage) if rows else 0.0


# A step for a stratum the query's conditions leave empty: its cell on the family (``stack``), its model or
# weight format in the stratum (``model``). Where a family, stack or model is new (no rows anywhere), its
# hold-out removed every stratum its group alone filled, so its error holds these.
_STRATUM_STEPS = ("stack", "model")


def counted_steps(q: Query, t: Table, steps: Sequence[str]) -> list[str]:
    """The kinds of step that widen the interval, each once. A step for an empty stratum whose condition has
    rows elsewhere (a stack with rows on other families; a model, class or weight format with rows in other
    cells) is implied by a step for a condition with no rows anywhere (a new chip family, stack or model):
    that condition's hold-out held its group out whole, with the strata it alone filled (a new family's every
    cell; a model's cells and the host-time fits only its rows gave), so its error already holds the empty
    stratum. It stays named among the reasons. Steps for conditions new everywhere add as independent."""
    kinds = list(dict.fromkeys(steps))
    if not set(_STRATUM_STEPS) & set(kinds) or len(kinds) == 1:
        return kinds
    new = _new_everywhere(q, t, kinds)
    return kinds if not new else [k for k in kinds if k not in _STRATUM_STEPS or k in new]


def _new_everywhere(q: Query, t: Table, kinds: Sequence[str]) -> set[str]:
    """The query's kinds of step whose condition has no rows in the whole table (not only in its stratum)."""
    rows = [r for rs in t.kinds.values() for r in rs]
    new = {"family"} & set(kinds)  # a family steps only when it has no validated cell: new as a family
    if "stack" in kinds and q.stack not in {r["stack"] for r in rows}:
        new.add("stack")
    if "model" in kinds and _new_model(q, rows):
        new.add("model")
    return new


def _new_model(q: Query, rows: Sequence[Row]) -> bool:
    """Whether the query's model class, weight format or model (by architecture) has no rows at all."""
    if q.model_class is not None and q.model_class not in {r.get("model_class") for r in rows}:
        return True
    formats = {FORMAT_PRECISION.get(str(r.get("weights"))) for r in rows}
    if q.weights is not None and FORMAT_PRECISION.get(str(q.weights), q.weights) not in formats:
        return True
    if q.model is None:
        return False
    names = {str(r.get("model")) for r in rows if r.get("model")}
    return q.model not in names and architecture(q.model) not in {architecture(name) for name in names}


@cache
def shape_spread(coverage: float) -> float:
    """The out-of-range error of a kernel curve, measured: each measured GEMM curve with three points or more
    has its top point (its largest M) predicted from the points below it, as the pricing prices an op beyond
    a curve's range (held at the last measured share; the growth tables measured beyond a curve's last point
    are left out with it); the ``coverage`` quantile of |ln(measured /
    predicted)| over the curves, each weighing the same, as a spread about the prediction."""
    from cloudmatrix.catalog.kernels import curves  # read only where an answer has a shape outside

    rows = [
        {
            "series": i,
            "measured": c.points[-1][1],
            "predicted": c.model_copy(update={"points": c.points[:-1], "levels": [], "growth": []}).compute_efficiency(
                c.points[-1][0]
            ),
        }
        for i, c in enumerate(curves())
        if len(c.points) >= 3 and c.op != "attention"
    ]
    return step_spread(rows, coverage)


def step_bounds(rows: Sequence[Row], coverage: float) -> tuple[float, float]:
    """A step's interval as ratios to the prediction (``step_spread`` on either side)."""
    spread = step_spread(rows, coverage)
    return math.exp(-spread), math.exp(spread)
