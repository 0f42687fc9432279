"""The out-of-group residuals an interval draws on, indexed once per metric: series-weighted quantiles of
measured / predicted, and the residuals split into pools by how the row's host times were obtained.

Where a (stack, family)'s host times were fitted on its own rows, a prediction is a new deployment of a
validated thing: its base is the leave-one-series-out error (``--holdout series``). Where they were not (a
stack's default, a ``like:`` reference, a hold-out that took every fit row), the twin is the device model
alone, and its error is several times larger and biased: its base is every out-of-group residual predicted
that way, whatever hold-out produced it (one row counted once). Pooling the two would hand a fitted query the
fall-back's spread and an unfitted one the fitted error. Inside the unfitted pool, the rows whose host times
no measured row of any engine informed (``prior``: a hold-out that took every engine's fit rows left each its own
priors alone) are also kept as a sub-pool: a query priced so meets their error, not only that of rows priced on
another family's fit or on other engines' rows (``studies/interval_prior.py``).

A steady metric (one step of one instance) has few rows of its own; an end-to-end run's per-chip throughput is
made of it (``STEP_COUNTERPART``). A (family, stack) cell with too few steady rows takes its end-to-end rows
beside them, so a cell validated end to end is inside the domain for the step too."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from cloudmatrix.catalog.holdout_index import holdout_rows, index_bytes
from cloudmatrix.catalog.holdout_index import usable as usable_row
from cloudmatrix.catalog.object_cache import cached_object
from cloudmatrix.catalog.reference import load_reference, reference_ids
from cloudmatrix.catalog.residuals import isl_band, model_class, stored_holdout_residuals, stored_residuals

Row = Mapping[str, Any]

MIN_ROWS = 8  # a stratum with fewer rows falls through to the next level
MIN_SERIES = 3  # ... and so does one whose rows come from fewer deployments
BASE_KIND = "series"  # the fitted base: the error on a new deployment of a validated family, stack and class
HOST_BASES = ("fitted", "unfitted")
PRIOR = "prior"  # host times on the engine's priors alone: a sub-pool of ``unfitted`` (``host_basis.HOST_PRIOR``)
POOLED = {"fitted": ("fitted",), "unfitted": ("unfitted", PRIOR), PRIOR: (PRIOR,)}  # the bases each pool holds
# A steady metric whose hold-out kinds have too few rows takes the steps' error of its end-to-end counterpart
# (one step's per-chip throughput is what an end-to-end run's per-chip throughput is made of).
STEP_COUNTERPART = {"throughput_per_chip_tok_s": "output_tok_s_per_chip"}


def host_basis(row: Row) -> str:
    """How the row's host times were obtained when it was predicted (a table written before the field was
    stored counts as fitted: its base was the series hold-out alone)."""
    return str(row.get("host_times") or "fitted")


def priced(row: Row, basis: str | None) -> bool:
    """Whether a row belongs to the pool of host-time basis ``basis`` (the unfitted pool holds the
    priors-alone rows too)."""
    return host_basis(row) in POOLED.get(str(basis), (basis,))


def usable(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if usable_row(r)]


def interval_rows() -> list[Row]:
    """Every residual an interval reads: the stored hold-out table and the papers' predicted rows (what the
    per-metric index, ``catalog/holdout_index.py``, is written from)."""
    held = stored_holdout_residuals()
    return [*held, *paper_residuals(held, stored_residuals())]


def enough(rows: Sequence[Row]) -> bool:
    return len(rows) >= MIN_ROWS and len({r["series"] for r in rows}) >= MIN_SERIES


def ratio(row: Row) -> float:
    return float(row["measured"] / row["predicted"])


def series_quantiles(
    rows: Sequence[Row], levels: Sequence[float], score: Callable[[Row], float] = ratio
) -> list[float]:
    """Quantiles of measured / predicted (or another ``score`` of a row) with every series weighing the same
    (weighted empirical CDF at the midpoints of each row's weight, interpolated linearly and held flat beyond
    its ends). Plain Python: a few hundred rows, and the estimate path stays free of numpy."""
    counts = Counter(r["series"] for r in rows)
    pairs = sorted(((score(r), 1.0 / counts[r["series"]]) for r in rows), key=lambda p: p[0])
    ratios, weights = [p[0] for p in pairs], [p[1] for p in pairs]
    total = sum(weights)
    cdf = [(c - w / 2) / total for c, w in zip(accumulate(weights), weights, strict=True)]
    return [_interp(q, cdf, ratios) for q in levels]


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Linear interpolation on increasing ``xs``, flat beyond the ends (numpy's ``interp``)."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return (y1 - y0) / (x1 - x0) * (x - x0) + y0


@dataclass(frozen=True)
class Pool:
    """One host-time basis: its base residuals by (family, stack) cell, and each hold-out kind's."""

    cells: dict[tuple[str, str], list[Row]]
    kinds: dict[str, list[Row]]

    @property
    def base(self) -> list[Row]:
        return [r for rows in self.cells.values() for r in rows]


@dataclass(frozen=True)
class Table:
    """One metric's usable out-of-group residuals: a pool per host-time basis, the priors-alone sub-pool of
    the unfitted one, every kind's rows, and its end-to-end counterpart's kinds (``STEP_COUNTERPART``; empty
    for the others)."""

    pools: dict[str, Pool]
    kinds: dict[str, list[Row]]
    counterpart_kinds: dict[str, list[Row]]
    vendors: dict[str, str] = field(default_factory=dict)  # each row's chip family's maker
    prior: Pool = field(default_factory=lambda: Pool(cells={}, kinds={}))  # rows priced on priors alone

    def vendor(self, row: Row) -> str:
        return self.vendors.get(str(row.get("family")), "unknown")

    @property
    def base(self) -> list[Row]:
        return [r for p in self.pools.values() for r in p.base]


def index_residuals(residuals: Iterable[Row], metric: str) -> Table:
    """One metric's residuals indexed for many queries (``query_interval(table=...)``)."""
    residuals = list(residuals)
    rows = usable(r for r in residuals if r.get("metric") == metric)
    kinds = _by_kind(rows)
    counterpart = STEP_COUNTERPART.get(metric)
    ends = usable(r for r in residuals if r.get("metric") == counterpart) if counterpart else []
    return Table(
        pools={basis: _pool(rows, ends, basis) for basis in HOST_BASES},
        kinds=kinds,
        counterpart_kinds=_by_kind(ends),
        vendors=family_vendors({str(r.get("family")) for r in residuals}),
        prior=_pool(rows, ends, PRIOR),
    )


def _pool(rows: Sequence[Row], ends: Sequence[Row], basis: str) -> Pool:
    """The pool of one host-time basis: its base rows by cell, and each kind's rows priced so."""
    mine = [r for r in rows if priced(r, basis)]
    cells = _cells(_base(mine, basis))
    for key, theirs in _cells(_base([r for r in ends if priced(r, basis)], basis)).items():
        if not enough(cells.get(key, [])):  # a thin cell of one step: its end-to-end runs' (STEP_COUNTERPART)
            cells[key] = _once([*cells.get(key, []), *theirs])
    return Pool(cells=cells, kinds=_by_kind(mine))


def _base(rows: Sequence[Row], basis: str) -> list[Row]:
    """A pool's base rows: the series hold-out's where host times were fitted, else every hold-out's once."""
    return [r for r in rows if r.get("kind") == BASE_KIND] if basis == "fitted" else _once(rows)


def _cells(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    cells: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        cells[(r["family"], r["stack"])].append(r)
    return dict(cells)


def family_vendors(families: Iterable[str]) -> dict[str, str]:
    """The maker of each chip family's chips (the residuals name the family, not the system), read from the
    hardware catalog once per table, which is kept per content (``stored_table``)."""
    from cloudmatrix.catalog.hardware import load_hardware, system_ids  # read only where a table is built

    wanted, out = set(families), dict[str, str]()
    for system in system_ids():
        if wanted <= out.keys():
            break
        hw = load_hardware(system)
        out.setdefault(hw.chip.family, hw.system.vendor)
    return {f: v for f, v in out.items() if f in wanted}


def stored_table(metric: str) -> Table | None:
    """``index_residuals`` of the stored per-metric index (the metric's rows and its counterpart's), kept per
    content of those files and of this module's code (``catalog/object_cache.py``): a later process loads the
    rows already in their pools (a fifth of a bare estimate's interval). None where an index is missing."""
    metrics = [m for m in (metric, STEP_COUNTERPART.get(metric)) if m]
    texts = [index_bytes(m) for m in metrics]
    if any(t is None for t in texts):
        return None
    key = [b"interval-table", metric.encode(), Path(__file__).read_bytes(), *(t or b"" for t in texts)]
    return cached_object(
        b"\0".join(key), lambda: index_residuals([r for m in metrics for r in holdout_rows(m) or ()], metric)
    )


def _by_kind(rows: Iterable[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        out[str(r.get("kind", ""))].append(r)
    return dict(out)


def _once(rows: Iterable[Row]) -> list[Row]:
    """Each row once: several hold-outs that price a row with the same fall-back predict it alike."""
    seen: dict[tuple[Any, Any], Row] = {}
    for r in rows:
        seen.setdefault((r["id"], r["predicted"]), r)
    return list(seen.values())


def paper_residuals(holdout: Iterable[Row], residuals: Iterable[Row]) -> list[Row]:
    """The papers' rows (``reproduce``; predicted role) as base residuals of their own cell: the evidence of
    systems the validation corpus has no rows of (CloudMatrix384 under CloudMatrix-Infer, DeepSeek's engine
    on H800). Their constants were fitted on the papers' ``fitted`` rows, never on these. Each is one step of
    one instance (``steady``) of its reference set's model, at the prompt length its series names. A per-chip
    throughput row also stands for the end-to-end output tok/s per chip of that system, which the papers do
    not measure: its error is the instances' per-chip throughput error."""
    held = {r["id"] for r in holdout}
    sets = reference_ids()
    out: list[Row] = []
    for r in residuals:
        ref = str(r["id"]).split(":", 1)[0]
        if r["id"] in held or ref not in sets or ":" not in str(r["id"]) or r.get("role") != "predicted":
            continue
        model = load_reference(ref).model
        shape = str(r["series"]).rsplit(":", 1)[-1].split("/")[0]
        isl = int(shape) if shape.isdigit() else None
        extra = {"kind": BASE_KIND, "host_times": "fitted", "model": model, "model_class": _model_class(model)}
        row = dict(r) | extra | {"band": "steady", "isl": isl, "isl_band": isl_band(isl)}
        out.append(row)
        if row["metric"] == "throughput_per_chip_tok_s":  # the per-chip throughput an end-to-end run reports
            out.append(row | {"metric": "output_tok_s_per_chip"})
    return out


def _model_class(model: str) -> str:
    from cloudmatrix.catalog.models import load_model  # the estimate path reads models only where it must

    return model_class(load_model(model))
