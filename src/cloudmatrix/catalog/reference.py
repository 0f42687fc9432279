"""Published reference points (paper rows with their conditions) as data."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from cloudmatrix.catalog.record import Record, field
from cloudmatrix.catalog.sourced import DATA_DIR, parse_file
from cloudmatrix.errors import UnknownIdError

REFERENCE_DIR = DATA_DIR / "reference"


class ReferenceRow(Record):
    id: str
    quantity: str
    published: float
    unit: str
    source: str
    tolerance_pct: float = field(gt=0)
    role: Literal["predicted", "fitted"]
    setup: dict[str, Any]
    # Ablation rows: the quantity at ``setup`` over the same quantity with ``baseline`` merged into it...
    baseline: dict[str, Any] | None = None
    # ...optionally over every value of one setup key, keeping the largest or smallest ratio
    sweep: dict[str, list[Any]] | None = field(default=None, max_length=1)
    reduce: Literal["max", "min"] | None = None
    stack: str | None = None  # the serving stack that was measured; default: the set's


class ReferenceSet(Record):
    id: str
    title: str
    system: str
    model: str
    stack: str  # serving stack of the set's rows (validation stack ids)
    defaults: dict[str, Any] = field(default_factory=dict)
    rows: list[ReferenceRow]


def reference_ids() -> list[str]:
    return sorted(p.stem for p in REFERENCE_DIR.glob("*.yaml"))


@cache
def load_reference(set_id: str) -> ReferenceSet:
    if set_id not in reference_ids():
        raise UnknownIdError("reference set", set_id, reference_ids())
    path = REFERENCE_DIR / f"{set_id}.yaml"
    return parse_file(ReferenceSet, path)
