"""The stored in-sample residual table (``validate --write-residuals``): every validation row and metric, then
the papers' and Hopper rows from ``reproduce``. The hold-out residuals intervals read are stored apart
(``validate --holdout KIND --write-residuals``, ``studies/holdout.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cloudmatrix.catalog.hardware import chip_family
from cloudmatrix.catalog.residuals import METRICS
from cloudmatrix.studies.intervals import COVERAGE, MIN_ROWS

if TYPE_CHECKING:
    from cloudmatrix.studies.reproduce import Reproduction


def reproduce_residuals(reproductions: Iterable[Reproduction]) -> list[dict[str, Any]]:
    """Paper and Hopper rows as residuals: the quantities shared with validation metrics, with their stack."""
    out = []
    for rep in reproductions:
        ref = rep.reference
        for res in rep.results:
            row = res.row
            if row.quantity not in METRICS or row.baseline is not None:
                continue
            setup = {**ref.defaults, **row.setup}
            system = setup.get("system", ref.system)
            # a series: one instance kind at one prompt/output shape, swept over batch (as in the corpus)
            shape = f"{setup.get('phase')}:{setup.get('input_len', 4096)}/{setup.get('output_len', 256)}"
            out.append(
                {
                    "id": f"{ref.id}:{row.id}",
                    "series": f"{ref.id}:{system}:{shape}",
                    "system": system,
                    "family": chip_family(system),
                    "stack": row.stack or ref.stack,
                    "metric": row.quantity,
                    "role": row.role,
                    "status": "ok",
                    "concurrency": None,
                    "mtp": setup.get("mtp", 0),
                    "measured": row.published,
                    "predicted": round(res.predicted, 4),
                }
            )
    return out


RESIDUAL_FIELDS = (
    "id",
    "series",
    "system",
    "family",
    "stack",
    "metric",
    "role",
    "status",
    "concurrency",
    "mtp",
    "measured",
    "predicted",
)


def residual_table(entries: Iterable[Mapping[str, Any]], reproductions: Iterable[Reproduction]) -> dict[str, Any]:
    """The stored residual table: every validation row and metric (``Validation.entries()``), then the paper
    and Hopper rows."""
    rows = [{k: e[k] for k in RESIDUAL_FIELDS} for e in entries]
    return {
        "generated_by": "cloudmatrix validate --write-residuals (do not edit: regenerate with the cost model)",
        "coverage": COVERAGE,
        "min_rows": MIN_ROWS,
        "rows": rows + reproduce_residuals(reproductions),
    }
