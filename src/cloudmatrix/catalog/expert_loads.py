"""The stored expert-load table: busiest-die factors of the shapes the shipped workflows price (the paper's
instances, the reference rows, every compare preset), computed by ``cost.experts`` and written by
``cloudmatrix calibrate --write-expert-loads``. A lookup table of a deterministic function, not a fit: a test
recomputes every entry by sampling and requires the same number. It spares a process numpy and the seeded
draws when it prices a shape someone priced before."""

from __future__ import annotations

import json
from functools import cache

from cloudmatrix.catalog.sourced import DATA_DIR

EXPERT_LOADS_PATH = DATA_DIR / "expert_loads.json"


@cache
def stored_factors() -> dict[str, float]:
    """Key (``cost.expert_load.factor_key``) → busiest-die load over the mean; empty when no table is shipped."""
    if not EXPERT_LOADS_PATH.is_file():
        return {}
    return dict(json.loads(EXPERT_LOADS_PATH.read_text())["factors"])
