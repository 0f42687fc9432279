"""The error of an answer whose host times are its engine's priors alone (host basis ``prior``: no measured row
of any engine informs them; ``catalog.host_basis.host_times_basis``).

Such an answer is the device model with the engine's own counted kernels per op and request time, and nothing
measured to correct it: what the other fall-backs of the unfitted pool borrow (another family's fit of the same
engine, the per-op gap other engines pay on the chip) is what closes most of the device model's miss, so their
error is smaller than this one and biased otherwise (held out with every fit row, vLLM's gpt-oss rows run
20 % fast at ISL 8K and 1K alike). The unfitted pool mixes both; a priors-alone answer also draws on the
priors-alone residuals of every hold-out that produced them (``interval_pools``' sub-pool), and its interval
is the hull of the two: the sub-pool adds its error, never takes away the pool's. Its bias is the answer's where
its rows are of the query's ecosystem; another ecosystem's widen an answer but do not say which way it errs.

The residuals are taken in the base's fixed fall-back order (``intervals._cells``): the query's own (family,
stack) cell, then the cells one condition away (its family or its stack) in its ecosystem, then its ecosystem
(``interval_steps.ecosystem_rows``: the chips of the vendors its engines run on), then every row; a level
needs ``MIN_ROWS`` rows from ``MIN_SERIES`` deployments (``interval_pools.enough``)."""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.catalog.hardware import system_vendor
from cloudmatrix.studies.interval_pools import Row, Table, enough, series_quantiles
from cloudmatrix.studies.interval_steps import Query, engine_vendors
from cloudmatrix.studies.interval_strata import strata


@dataclass(frozen=True, kw_only=True)
class PriorError:
    """The priors-alone residuals' interval as ratios measured / predicted (the envelope over the strata a
    query leaves open), their median's bias (None: rows of another ecosystem), the rows it stands on (none:
    too few) and why."""

    lo: float = 1.0
    hi: float = 1.0
    bias: float | None = None
    rows: tuple[Row, ...] = ()
    where: str = ""
    reason: str = ""


def prior_error(t: Table, q: Query, family: str, coverage: float) -> PriorError:
    """The error of the query's priors-alone residuals (``prior_rows``), stratified inside by the base's fixed
    fall-back (``interval_strata``)."""
    rows, where = prior_rows(t, q, family)
    reason = prior_reason(rows, where, str(q.stack), family)
    if not rows:
        return PriorError(reason=reason)
    groups = strata(q, [rows])
    bounds = [series_quantiles(g, [(1 - coverage) / 2, (1 + coverage) / 2]) for g in groups]
    ecosystem = engine_vendors(system_vendor(q.system))
    return PriorError(
        lo=min(b[0] for b in bounds),
        hi=max(b[1] for b in bounds),
        bias=series_quantiles(groups[0], [0.5])[0] - 1 if all(t.vendor(r) in ecosystem for r in rows) else None,
        rows=tuple(r for g in groups for r in g),
        where=where,
        reason=reason,
    )


def prior_rows(t: Table, q: Query, family: str) -> tuple[list[Row], str]:
    """The priors-alone residuals the query draws on, and where they are (`` of vllm on hopper``); none where
    no level of the fall-back has enough."""
    every = t.prior.base
    peers = engine_vendors(system_vendor(q.system))
    mine = [r for r in every if t.vendor(r) in peers]
    levels = (
        ([r for r in mine if r["family"] == family and r["stack"] == q.stack], f" of {q.stack} on {family}"),
        ([r for r in mine if r["family"] == family or r["stack"] == q.stack], f" of {q.stack} or on {family}"),
        (mine, f" on {' or '.join(sorted(peers))} chips"),
        (every, " on every chip"),
    )
    for rows, where in levels:
        if enough(rows):
            return rows, where
    return [], ""


def prior_reason(rows: list[Row], where: str, stack: str, family: str) -> str:
    """Why the answer is as wide as it is: its host times' basis and the residuals that measured it."""
    head = f"host times of {stack} on {family} are its priors alone (no measured row of any engine fits them)"
    if not rows:
        return f"{head}; too few rows predicted so: the unfitted pool's interval stands"
    series = len({r["series"] for r in rows})
    return f"{head}: the error of {len(rows):,} rows from {series:,} deployments predicted so{where} widens it"
