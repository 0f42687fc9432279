"""Scoring out-of-group predictions against their intervals: each group's rows get the interval built from the
other groups' out-of-group residuals only (nested), and per metric the median |error|, the bias, the coverage
of the 80 % interval (pooled and series-weighted, each with its Wilson score interval), the share of ``unknown``
answers and the median relative width, overall and per group. Also each ``validate`` entry's interval from
the stored table without its own series."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from cloudmatrix.catalog.residuals import stored_residuals
from cloudmatrix.studies.interval_pools import paper_residuals
from cloudmatrix.studies.intervals import COVERAGE, Query, index_residuals, query_interval

SCORED = ("output_tok_s_per_chip", "tok_s_per_chip", "throughput_per_chip_tok_s", "tpot_ms", "ttft_ms", "p99_ttft_ms")


def entry_query(e: Mapping[str, Any]) -> Query:
    """The query an answer for this entry's conditions makes."""
    return Query(
        system=e["system"],
        stack=e["stack"],
        metric=e["metric"],
        model=e.get("model"),
        model_class=e.get("model_class"),
        weights=e.get("weights"),
        isl=e.get("isl"),
        band=e.get("band"),
        concurrency=e.get("concurrency"),
        host_times=e.get("host_times"),
    )


def with_intervals(entries: Sequence[Mapping[str, Any]], table_without: Any, key: str) -> list[dict[str, Any]]:
    """Each entry with ``interval_lo``/``interval_hi`` (None: unknown) and its extrapolation reasons; the
    interval comes from ``table_without(entry[key])`` (the residuals without the entry's own group)."""
    tables: dict[tuple[str, str], Any] = {}
    out = []
    for e in entries:
        lo = hi = None
        reasons: list[str] = []
        if e.get("status") == "ok" and e.get("predicted"):
            k = (str(e[key]), e["metric"])
            if k not in tables:
                tables[k] = index_residuals(table_without(e[key]), e["metric"])
            iv = query_interval(float(e["predicted"]), entry_query(e), table=tables[k])
            lo = None if iv.lo is None else round(iv.lo, 4)
            hi = None if iv.hi is None else round(iv.hi, 4)
            reasons = list(iv.extrapolating)
        out.append(dict(e) | {"interval_lo": lo, "interval_hi": hi, "extrapolating": reasons})
    return out


# The field of a residual that names its group under each hold-out kind (a paper row is held out with the
# corpus rows of its group; ``corpus`` has none, and its groups are removed by row id alone).
GROUP_FIELD = {k: k for k in ("series", "system", "family", "stack", "model", "band")} | {"isl": "isl_band"}


def nested(entries: Sequence[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Intervals for a hold-out run's entries: group g's from this run's other groups, the stored residuals
    of the other kinds and the papers' rows (as every answer's interval reads them), every row of g removed."""
    kind = entries[0]["kind"] if entries else None
    stored = [r for r in stored if r.get("kind") != kind]
    stored += paper_residuals([*stored, *entries], stored_residuals())
    field = GROUP_FIELD.get(str(kind))
    ids: dict[str, set[str]] = {}
    for e in entries:
        ids.setdefault(e["group"], set()).add(e["id"])

    def without(group: str) -> list[Mapping[str, Any]]:
        mine = ids[group]
        kept = [r for r in stored if r["id"] not in mine and (field is None or str(r.get(field)) != group)]
        return kept + [e for e in entries if e["group"] != group]

    return with_intervals(entries, without, "group")


def series_without(table: Sequence[Mapping[str, Any]]) -> Any:
    """``validate --json``'s lookup: the stored out-of-group residuals (and the papers' rows, as every answer's
    interval reads them) without one series."""
    table = [*table, *paper_residuals(table, stored_residuals())]
    return lambda series: [r for r in table if r["series"] != series]


def _stats(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One cell: rows, median |error| and bias over answers, coverage (pooled and series-weighted) over
    answers with an interval, unknown share (a refusal or an unknown interval), median relative width."""
    answered = [e for e in entries if e["status"] == "ok" and e["predicted"]]
    errors = [(e["predicted"] - e["measured"]) / e["measured"] * 100 for e in answered]
    known = [e for e in answered if e["interval_lo"] is not None]
    hits = [e["interval_lo"] <= e["measured"] <= e["interval_hi"] for e in known]
    per_series = Counter(e["series"] for e in known)
    weights = [1.0 / per_series[e["series"]] for e in known]
    pooled = sum(hits) / len(hits) if hits else None
    weighted = sum(w for w, h in zip(weights, hits, strict=True) if h) / sum(weights) if hits else None
    return {
        "rows": len(entries),
        "answered": len(answered),
        "median_abs_error_pct": _r(statistics.median(abs(x) for x in errors) if errors else None),
        "bias_pct": _r(statistics.median(errors) if errors else None),
        "coverage": _r(pooled, 4),
        **_bounds("coverage", pooled, len(hits)),
        "coverage_series": _r(weighted, 4),
        **_bounds("coverage_series", weighted, len(per_series)),
        "unknown_share": _r(1 - len(known) / len(entries), 4) if entries else None,
        "median_width_pct": _r(
            statistics.median((e["interval_hi"] - e["interval_lo"]) / e["predicted"] * 100 for e in known)
            if known
            else None
        ),
        "series": len({e["series"] for e in entries}),
    }


def wilson(p: float, n: int, z: float = 1.0) -> tuple[float, float]:
    """The Wilson score interval of a share ``p`` over ``n`` independent draws, at ``z`` standard errors (one:
    the ± of the tables). Unlike the Wald p ± sqrt(p(1 - p)/n), it is not empty at p = 0 or 1 (40 draws all
    inside: 97.6-100 %) and stays inside [0, 1]."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if p <= 0 else max(centre - half, 0.0)), (1.0 if p >= 1 else min(centre + half, 1.0))


def _bounds(name: str, p: float | None, n: int) -> dict[str, float | None]:
    """``{name}_lo``/``{name}_hi``: the share's Wilson interval (None where nothing was scored). The pooled share
    counts rows as draws, the series-weighted one series: rows of one series are correlated (one deployment's
    sweep), so the second is the honest uncertainty."""
    lo, hi = (None, None) if p is None or n == 0 else wilson(p, n)
    return {f"{name}_lo": _r(lo, 4), f"{name}_hi": _r(hi, 4)}


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def summary(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per metric, overall and per group."""
    metrics = [m for m in SCORED if any(e["metric"] == m for e in entries)]
    overall = {m: _stats([e for e in entries if e["metric"] == m]) for m in metrics}
    groups = sorted({e["group"] for e in entries})
    by_group = [
        {"group": g, "metric": m} | _stats(mine)
        for g in groups
        for m in metrics
        if (mine := [e for e in entries if e["group"] == g and e["metric"] == m])
    ]
    return {"coverage_target": COVERAGE, "metrics": overall, "groups": by_group}


def score_stored(kind: str, table: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A stored hold-out kind scored as its run scores it (nested), without running anything again: the
    figures docs/validation.md quotes and the tests guard."""
    entries = [r for r in table if r.get("kind") == kind]
    return summary(nested(entries, table)) if entries else {"coverage_target": COVERAGE, "metrics": {}, "groups": []}


# The corpora that joined the shipped corpus last (issue 22: the 8K/1K and AMD SGLang InferenceMAX rows, SGLang
# on Atlas A3, the 2026 weight formats; issue 29: EAGLE-3 on SGLang), none in ``stack_fit.FIT_CORPORA``; six
# fitted-role rows of sglang-ascend and formats-2026 do set SGLang's graph cost per op on Ascend, and six
# fitted-role MI300X rows of inferencemax-more its cost per op on CDNA (graph_fit).
LATEST_CORPORA = ("inferencemax-more", "sglang-ascend", "formats-2026", "eagle3-sglang")


def score_prospective(table: Sequence[Mapping[str, Any]], corpora: Sequence[str] = LATEST_CORPORA) -> dict[str, Any]:
    """A pseudo-prospective check: the rows of ``corpora`` as the twin would have answered them before they were
    published (``unpublished``: every constant fitted on any of their rows refitted without them), each scored
    against the interval an answer gets from the stored out-of-group residuals with every row of those corpora
    removed (all kinds). Grouped by corpus. The measured values and each row's fields are the stored table's."""
    from cloudmatrix.catalog.corpus import load_rows

    corpus_of = {r.id: name for name in corpora for r in load_rows(name)}
    answers = unpublished(tuple(corpora))
    entries = [
        dict(r) | answers[(r["id"], r["metric"])] | {"group": corpus_of[r["id"]]}
        for r in table
        if r.get("kind") == "series" and r["id"] in corpus_of
    ]
    kept = [r for r in table if r["id"] not in corpus_of]
    kept += paper_residuals(kept, stored_residuals())
    return summary(with_intervals(entries, lambda _: kept, "kind"))


@cache
def unpublished(corpora: tuple[str, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each row and metric of ``corpora`` predicted as if none of them had been published: their rows held out
    together as one group (``validate --holdout corpus`` with the corpora as one), so every constant fitted on
    any of them is refitted without them (SGLang's cost per op on CDNA, fitted on MI300X rows of
    inferencemax-more; SGLang-on-Ascend's graph cost, fitted on rows of sglang-ascend and formats-2026) or falls
    back to its prior. The series hold-out does not: it refits without the row's own series only, so the
    corpus's other series still price it. A row whose constants the refit leaves unchanged takes its stored
    in-sample prediction. ``{(id, metric): {predicted, status, host_times}}``."""
    from cloudmatrix.catalog.corpus import load_rows
    from cloudmatrix.studies.holdout import holdout  # runs the twin: read only where the check is scored

    rows = [(r, "unpublished") for name in corpora for r in load_rows(name)]
    baseline = {(e["id"], e["metric"]): e for e in stored_residuals()}
    held = holdout("corpus", rows, baseline=baseline, jobs=1, memo={})
    keep = ("predicted", "status", "host_times")
    return {(e["id"], e["metric"]): {k: e[k] for k in keep} for e in held.entries}
