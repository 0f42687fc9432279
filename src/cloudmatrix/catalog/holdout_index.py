"""The residuals an answer's interval reads, cut down to what it reads: per metric, the usable rows (answered,
both values positive) with only their strata fields and values, in the source's order. The source is the
stored hold-out table (``residuals-holdout.json``, 4 MB) plus the papers' predicted rows
(``studies/interval_pools.interval_rows``); ``validate --holdout KIND --write-residuals`` writes the index
beside the table, so that an answer parses a few hundred kB for its metric instead of the whole table;
``tests/validation/test_holdout_index.py`` checks that it equals what the full source gives."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from cloudmatrix.catalog.object_cache import cached_object
from cloudmatrix.catalog.residuals import METRICS, VALIDATION_DIR
from cloudmatrix.catalog.sourced import read_catalog_bytes
from cloudmatrix.errors import ConfigError

INDEX_DIR = VALIDATION_DIR / "holdout-index"
# What intervals read of a row besides its metric and status (``studies/intervals.py``).
FIELDS = (
    "id",
    "kind",
    "host_times",
    "family",
    "stack",
    "model",
    "model_class",
    "weights",
    "isl",
    "isl_band",
    "concurrency",
    "band",
    "measured",
    "predicted",
)
GENERATED_BY = (
    "cloudmatrix validate --holdout KIND --write-residuals, from residuals-holdout.json and the papers' rows"
    " (do not edit)"
)


def usable(row: Mapping[str, Any]) -> bool:
    """A row an interval can use: answered, with a positive measured and predicted value."""
    return row.get("status") == "ok" and (row.get("predicted") or 0) > 0 and (row.get("measured") or 0) > 0


def projected(rows: Iterable[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The usable rows of ``metric`` with only the fields intervals read (the index's rows, expanded)."""
    keep = ("series", *FIELDS)
    return [
        {"metric": metric, "status": "ok"} | {k: r.get(k) for k in keep}
        for r in rows
        if r.get("metric") == metric and usable(r)
    ]


def index_text(rows: Iterable[Mapping[str, Any]], metric: str) -> str:
    """One metric's index as JSON: the distinct series once, then one column per field (a line each)."""
    mine = projected(rows, metric)
    series = list(dict.fromkeys(r["series"] for r in mine))
    number = {s: i for i, s in enumerate(series)}
    columns = {"series": [number[r["series"]] for r in mine]} | {k: [r[k] for r in mine] for k in FIELDS}
    head = json.dumps({"generated_by": GENERATED_BY, "metric": metric})[:-1]
    lines = [f'"series": {json.dumps(series)}'] + [f'"{k}": {json.dumps(v)}' for k, v in columns.items()]
    return head + ',\n"columns": {\n' + ",\n".join(lines[1:]) + "},\n" + lines[0] + "}\n"


def index_texts(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Every metric's index file name and text."""
    rows = list(rows)
    return {f"{metric}.json": index_text(rows, metric) for metric in METRICS}


@cache
def holdout_rows(metric: str) -> tuple[dict[str, Any], ...] | None:
    """The usable rows of ``metric`` an interval reads (as ``projected`` gives them), from the index (kept
    per content: ``catalog/object_cache.py``); None where no index has been written (the caller then reads
    the full source)."""
    text = index_bytes(metric)
    if text is None:
        return None
    name = f"{metric}.json"
    return cached_object(f"holdout-index\0{metric}\0".encode() + text, lambda: _rows(metric, text, name))


def index_bytes(metric: str) -> bytes | None:
    """The bytes of ``metric``'s index file (None where none has been written)."""
    path = INDEX_DIR / f"{metric}.json"
    return read_catalog_bytes(path) if path.exists() else None


def _rows(metric: str, text: bytes, name: str) -> tuple[dict[str, Any], ...]:
    try:
        data = json.loads(text)
        series, columns = data["series"], data["columns"]
        n = len(columns["series"])
        names = ("metric", "status", "series", *FIELDS)
        # a text repeated down a column is one object (the family, stack, model of many rows), which pickling
        # then stores once: the kept rows load in half the time
        shared: dict[str, str] = {}
        fields = ([shared.setdefault(v, v) if isinstance(v, str) else v for v in columns[k]] for k in FIELDS)
        # one dict per row straight from the columns (no merge of two dicts a row: 3,500 rows an estimate)
        return tuple(
            dict(zip(names, values, strict=True))
            for values in zip(
                [metric] * n,
                ["ok"] * n,
                [series[i] for i in columns["series"]],
                *fields,
                strict=True,
            )
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ConfigError(f"{name}: cannot read ({e})") from None
