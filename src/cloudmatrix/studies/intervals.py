"""Prediction intervals from measured error: empirical quantiles (split-conformal style) of measured /
predicted over the ``predicted``-role rows of the residual table, in the first stratum with enough rows:
(system, stack, metric), then (chip family, stack, metric), then (stack, metric). The interval is where the
measured value is expected to fall; where the twin is biased it need not contain the point prediction.

The exchangeable unit is the series (one deployment swept over concurrency), not the row: rows of one
series share their layout and so their error. Each series therefore weighs the same in the quantiles, and a
stratum needs rows from at least ``MIN_SERIES`` series as well as ``MIN_ROWS`` rows."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from cloudmatrix.catalog.hardware import chip_family
from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.catalog.residuals import METRICS, stored_residuals

if TYPE_CHECKING:  # the estimate path attaches intervals without loading the reproduce study
    from cloudmatrix.studies.reproduce import Reproduction

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
MIN_ROWS = 8  # a stratum with fewer predicted rows falls through to the next level
MIN_SERIES = 3  # ... and so does one whose rows come from fewer deployments
COVERAGE = 0.8


@dataclass(frozen=True, kw_only=True)
class Interval:
    lo: float | None
    hi: float | None
    coverage: float
    rows: int
    stratum: str | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "lo": None if self.lo is None else round(self.lo, 4),
            "hi": None if self.hi is None else round(self.hi, 4),
            "coverage": self.coverage,
            "rows": self.rows,
            "stratum": self.stratum,
        }
        if self.note:
            d["note"] = self.note
        return d

    def label(self, fmt: str = ",.0f") -> str:
        """``1,850–2,210, 80 %`` or ``no validation data``."""
        if self.lo is None or self.hi is None:
            return "no validation data"
        return f"{self.lo:{fmt}}–{self.hi:{fmt}}, {self.coverage:.0%}"


def _usable(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        r for r in rows if r.get("role") == "predicted" and r.get("status") == "ok" and (r.get("predicted") or 0) > 0
    ]


def series_quantiles(rows: Sequence[Mapping[str, Any]], levels: Sequence[float]) -> list[float]:
    """Quantiles of measured / predicted with every series weighing the same (weighted empirical CDF at
    the midpoints of each row's weight, interpolated linearly and held flat beyond its ends). Plain Python:
    a few hundred rows, and the estimate path stays free of numpy."""
    counts = Counter(r["series"] for r in rows)
    pairs = sorted(((r["measured"] / r["predicted"], 1.0 / counts[r["series"]]) for r in rows), key=lambda p: p[0])
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


def strata(system: str, stack: str | None, metric: str) -> list[tuple[str, dict[str, str]]]:
    """The fixed fallback: each level's label and the fields a residual must match."""
    if stack is None:
        return []
    family = chip_family(system)
    return [
        (f"{system} x {stack} x {metric}", {"system": system, "stack": stack, "metric": metric}),
        (f"{family} x {stack} x {metric}", {"family": family, "stack": stack, "metric": metric}),
        (f"{stack} x {metric}", {"stack": stack, "metric": metric}),
    ]


def interval(
    value: float,
    system: str,
    stack: str | None,
    metric: str,
    coverage: float = COVERAGE,
    residuals: Sequence[Mapping[str, Any]] | None = None,
) -> Interval:
    """The interval around ``value`` (a prediction of ``metric`` for ``system`` under ``stack``)."""
    table = stored_residuals() if residuals is None else residuals
    best = 0
    for label, match in strata(system, stack, metric):
        rows = _usable(r for r in table if all(r.get(k) == v for k, v in match.items()))
        best = max(best, len(rows))
        if len(rows) >= MIN_ROWS and len({r["series"] for r in rows}) >= MIN_SERIES:
            lo_q, hi_q = series_quantiles(rows, [(1 - coverage) / 2, (1 + coverage) / 2])
            return Interval(lo=value * lo_q, hi=value * hi_q, coverage=coverage, rows=len(rows), stratum=label)
    why = (
        "no serving stack known for this system"
        if stack is None
        else f"fewer than {MIN_ROWS} predicted rows from {MIN_SERIES} deployments"
    )
    return Interval(lo=None, hi=None, coverage=coverage, rows=best, stratum=None, note=f"no validation data ({why})")


def _lookup(d: Mapping[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


def attach(d: dict[str, Any], system: str, metrics: Mapping[str, str], stack: str | None = None) -> dict[str, Any]:
    """Add ``intervals`` to an output dict: for each headline figure at dotted ``path`` (mapped to its
    validation metric), ``{lo, hi, coverage, rows, stratum, metric}``. Returns ``d``."""
    stack = stack or default_stack(system)
    out = {}
    for path, metric in metrics.items():
        value = _lookup(d, path)
        if isinstance(value, int | float) and value > 0:
            out[path] = interval(float(value), system, stack, metric).to_dict() | {"metric": metric}
    d["intervals"] = out
    return d


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
