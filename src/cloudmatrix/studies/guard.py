"""The regression guard: a fast subset of the corpus that the test suite runs, and the median errors
recorded for it (``data/validation/ci-guard.yaml``). A change may only lower them, in the same commit."""

from __future__ import annotations

from typing import Any

from cloudmatrix.catalog.sourced import read_yaml
from cloudmatrix.catalog.validation import ROLES, VALIDATION_DIR, ValidationRow
from cloudmatrix.studies.scoring import error_stats
from cloudmatrix.studies.validate import Validation

GUARD_PATH = VALIDATION_DIR / "ci-guard.yaml"


def guard_data() -> dict[str, Any]:
    return dict(read_yaml(GUARD_PATH))


def guard_corpora() -> list[str]:
    """The corpora the recorded figures cover (the rule's ``corpora``)."""
    return list(guard_data()["rule"]["corpora"])


def ci_subset(rows: list[ValidationRow]) -> list[ValidationRow]:
    """Every steady row, and the end-to-end rows that simulate at most the rule's output tokens."""
    limit = guard_data()["rule"]["max_simulated_output_tokens"]
    return [
        r
        for r in rows
        if r.kind != "e2e"
        or (r.workload.num_requests or 10 * (r.workload.concurrency or 1)) * r.workload.output_len <= limit
    ]


def guard_figures(result: Validation) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per role and metric: the median |error| and the answered share of the subset's rows."""
    entries = result.entries()
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for role in ROLES:
        mine = [e for e in entries if e["role"] == role]
        for metric in sorted({e["metric"] for e in mine}):
            stats = error_stats([e["error_pct"] for e in mine if e["metric"] == metric])
            out.setdefault(role, {})[metric] = {
                "median_abs_error_pct": stats.to_dict()["median_abs_error_pct"],
                "answered_share": stats.to_dict()["answered_share"],
            }
    return out
