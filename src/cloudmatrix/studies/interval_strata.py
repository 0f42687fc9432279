"""The base stratum inside one (family, stack) cell of a host-time pool: a fixed fall-back over the model class,
the concurrency band and the ISL band, and the envelope over every validated value of a condition the query does
not state (``studies/intervals.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any

from cloudmatrix.catalog.residuals import isl_band
from cloudmatrix.studies.interval_pools import Row, enough
from cloudmatrix.studies.interval_steps import Query


def values(rows: Sequence[Row], name: str, wanted: str | None) -> list[str]:
    """The query's value where the rows have it, else every value they have (the envelope)."""
    present = sorted({str(r.get(name)) for r in rows})
    return [wanted] if wanted in present else present


def fallback(rows: Sequence[Row], cls: str, band: str, isl: str) -> list[Row]:
    """The fixed fall-back inside one (family, stack) cell: class x band x ISL, class x band, class, cell."""
    for match in ({"model_class": cls, "band": band, "isl_band": isl}, {"model_class": cls, "band": band}):
        mine = [r for r in rows if all(str(r.get(k)) == v for k, v in match.items())]
        if enough(mine):
            return mine
    mine = [r for r in rows if str(r.get("model_class")) == cls]
    return mine if enough(mine) else list(rows)


def strata(q: Query, cells: Sequence[Sequence[Row]]) -> list[list[Row]]:
    """Each cell's stratum by the fixed fall-back, for every validated value of a condition the query does
    not state or that has no rows in the cell (the envelope over them)."""
    return [
        fallback(rows, c, b, i)
        for rows in cells
        for c, b, i in product(
            values(rows, "model_class", q.model_class),
            values(rows, "band", q.band),
            values(rows, "isl_band", isl_band(q.isl)),
        )
    ]


def label(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """The stratum's shared fields: ``blackwell x vllm x mla x conc 9-64 x tpot_ms``."""
    parts = []
    for name in ("family", "stack", "model_class", "band", "isl_band"):
        values = {r.get(name) for r in rows}
        if len(values) == 1:
            parts.append(str(values.pop()))
    return " x ".join(parts + [metric])
