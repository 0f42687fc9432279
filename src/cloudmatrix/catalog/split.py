"""The fitted/predicted split of the validation corpus: a fixed rule over whole series (one deployment swept
over concurrency), so no measurement of a predicted series ever informs a fitted constant.

The rule, applied once when a series first enters the shipped corpus:
1. a series is ``fitted`` when the first 8 hex digits of sha256(series key) / 2^32 fall below 0.5, else
   ``predicted``;
2. every (stack, chip family) with rows keeps at least one fitted series: where none is, the series with
   the smallest hash becomes fitted;
3. at least half of the InferenceMAX rows (of every shipped InferenceMAX CSV) are predicted: while fewer are,
   the fitted series with the largest hash that rule 2 does not need turns predicted.
Roles that landed are frozen in ``data/validation/roles.yaml``; new series are assigned around them, and a
test checks the stored table against this rule, landing by landing (the first corpora from scratch, each later
landing around the roles frozen before it)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

FITTED_SHARE = 0.5  # rule 1: a stable coin per series


@dataclass(frozen=True, kw_only=True)
class SeriesInfo:
    key: str
    group: tuple[str, str]  # (stack, chip family)
    rows: int
    public_rows: int  # rows of the shipped InferenceMAX CSVs (rule 3 counts these)


def series_hash(key: str) -> float:
    """A stable number in [0, 1) per series key."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def assign_roles(series: Iterable[SeriesInfo], frozen: dict[str, str] | None = None) -> dict[str, str]:
    """Roles for ``series``: ``frozen`` ones keep theirs, the others follow the rule around them."""
    frozen = frozen or {}
    items = sorted(series, key=lambda s: series_hash(s.key))
    roles = {
        s.key: frozen.get(s.key) or ("fitted" if series_hash(s.key) < FITTED_SHARE else "predicted") for s in items
    }
    groups: dict[tuple[str, str], list[SeriesInfo]] = defaultdict(list)
    for s in items:
        groups[s.group].append(s)
    for members in groups.values():  # rule 2
        if not any(roles[s.key] == "fitted" for s in members):
            first = next((s for s in members if s.key not in frozen), None)
            if first is not None:
                roles[first.key] = "fitted"
    public = sum(s.public_rows for s in items)
    predicted = sum(s.public_rows for s in items if roles[s.key] == "predicted")
    for s in reversed(items):  # rule 3: largest hash first
        if predicted * 2 >= public:
            break
        if s.key in frozen or roles[s.key] != "fitted" or not s.public_rows:
            continue
        if sum(roles[m.key] == "fitted" for m in groups[s.group]) > 1:
            roles[s.key] = "predicted"
            predicted += s.public_rows
    return roles
