"""Scoring predictions against published values, shared by ``reproduce`` (paper rows) and ``validate``
(independent measurements): the signed error of one row and the statistics of a set of rows, where a row
the twin refused counts as a miss and never improves a median."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

WITHIN = (15.0, 25.0)  # the bands the summaries report


def error_pct(predicted: float, measured: float) -> float:
    """Signed relative error of a prediction, in percent of the measured value."""
    return (predicted - measured) / measured * 100.0


@dataclass(frozen=True, kw_only=True)
class ErrorStats:
    rows: int
    answered: int
    median_abs_error_pct: float | None  # over answered rows
    p90_abs_error_pct: float | None
    max_abs_error_pct: float | None
    bias_pct: float | None  # median signed error: > 0 the twin is high
    within_15_pct: float  # share of all rows (refused rows are misses)
    within_25_pct: float

    @property
    def answered_share(self) -> float:
        return self.answered / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["answered_share"] = round(self.answered_share, 4)
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in d.items()}


def error_stats(errors: Sequence[float | None]) -> ErrorStats:
    """Statistics of signed errors (percent); ``None`` marks a refused row."""
    answered = [e for e in errors if e is not None]
    absolute = [abs(e) for e in answered]
    n = len(errors)

    def share(limit: float) -> float:
        return sum(a <= limit for a in absolute) / n * 100.0 if n else 0.0

    return ErrorStats(
        rows=n,
        answered=len(answered),
        median_abs_error_pct=statistics.median(absolute) if absolute else None,
        p90_abs_error_pct=float(np.percentile(absolute, 90)) if absolute else None,
        max_abs_error_pct=max(absolute) if absolute else None,
        bias_pct=statistics.median(answered) if answered else None,
        within_15_pct=share(WITHIN[0]),
        within_25_pct=share(WITHIN[1]),
    )
