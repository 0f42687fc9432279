"""The verdict of `compare`: one reference pair (CloudMatrix384 against GB200 NVL72 unless ``--versus A,B``)
stated as ratios A / B per chip, per system, per kW, per $ of capital and in $ per million output tokens,
each with an interval and the side that wins.

The interval of a ratio combines the two sides' measured-error intervals of output tok/s per chip (every
figure here scales with it) as independent, at their extremes: lo = loA / hiB, hi = hiA / loB, on the
relative intervals. When both sides fall inside their 80 % intervals (probability 0.8² = 64 % for independent
sides) the ratio falls inside, so it covers the true ratio at least 64 % of the time. Where either side has no
interval the ratio's is unknown; where it spans 1 the verdict is "too close to call"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import system_ids
from cloudmatrix.errors import ConfigError, UnknownIdError

DEFAULT_PAIR = ("cloudmatrix384", "gb200-nvl72")
INTERVAL_METRIC = "output_tok_s_per_chip"  # the headline interval every figure of the verdict scales with
# (key in a compare row, label, higher is better)
FIGURES = (
    ("output_tok_s_per_chip", "per chip", True),
    ("output_tok_s_per_system", "per system", True),
    ("output_tok_s_per_kw", "per kW", True),
    ("output_tok_s_per_musd", "per $ of capital", True),
    ("economics.usd_per_mtok", "$ per million tokens", False),
)
TOO_CLOSE = "too close to call"


def parse_versus(text: str | None) -> tuple[str, str]:
    """``--versus A,B``: two distinct catalog system ids (default: CloudMatrix384, GB200 NVL72)."""
    if text is None:
        return DEFAULT_PAIR
    ids = [s.strip() for s in text.split(",")]
    if len(ids) != 2 or ids[0] == ids[1] or not all(ids):
        raise ConfigError(f"--versus '{text}': expected two different system ids, e.g. cloudmatrix384,gb200-nvl72")
    for s in ids:
        if s not in system_ids():
            raise UnknownIdError("system", s, list(system_ids()))
    return ids[0], ids[1]


@dataclass(frozen=True, kw_only=True)
class Ratio:
    figure: str
    label: str
    a: float | None
    b: float | None
    ratio: float | None
    lo: float | None
    hi: float | None
    higher_is_better: bool
    winner: str | None  # a system id, TOO_CLOSE, or None when a figure is missing

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _get(row: Mapping[str, Any], path: str) -> float | None:
    node: Any = row
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return float(node) if isinstance(node, int | float) and node > 0 else None


def _relative(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """The output-per-chip interval relative to its value, or None where it is unknown."""
    iv = (row.get("intervals") or {}).get(INTERVAL_METRIC) or {}
    value = row.get(INTERVAL_METRIC)
    if iv.get("lo") is None or iv.get("hi") is None or not value:
        return None
    return iv["lo"] / value, iv["hi"] / value


def ratio_interval(
    rel_a: tuple[float, float] | None, rel_b: tuple[float, float] | None, ratio: float, higher_is_better: bool
) -> tuple[float | None, float | None]:
    """lo = loA / hiB, hi = hiA / loB on the relative throughput intervals; a cost per token goes as one over
    throughput, so its relative interval is the throughput's inverted."""
    if rel_a is None or rel_b is None:
        return None, None
    if not higher_is_better:
        rel_a, rel_b = (1 / rel_a[1], 1 / rel_a[0]), (1 / rel_b[1], 1 / rel_b[0])
    return ratio * rel_a[0] / rel_b[1], ratio * rel_a[1] / rel_b[0]


def _winner(a: str, b: str, ratio: float, lo: float | None, hi: float | None, higher: bool) -> str:
    if lo is not None and hi is not None and lo <= 1 <= hi:
        return TOO_CLOSE
    if ratio == 1:
        return TOO_CLOSE
    return a if (ratio > 1) == higher else b


def verdict(rows: list[Mapping[str, Any]], pair: tuple[str, str]) -> dict[str, Any] | None:
    """The verdict over compare's rows for ``pair``; None when either system is not among the rows."""
    by_id = {r["system"]: r for r in rows}
    if pair[0] not in by_id or pair[1] not in by_id:
        return None
    ra, rb = by_id[pair[0]], by_id[pair[1]]
    out: dict[str, Any] = {"a": pair[0], "b": pair[1], "ratios": [], "infeasible": {}}
    for side in (ra, rb):
        if not side.get("feasible"):
            out["infeasible"][side["system"]] = side.get("reason") or "infeasible"
    if out["infeasible"]:
        return out
    rel_a, rel_b = _relative(ra), _relative(rb)
    for key, label, higher in FIGURES:
        a, b = _get(ra, key), _get(rb, key)
        if a is None or b is None:
            out["ratios"].append(Ratio(figure=key, label=label, a=a, b=b, ratio=None, lo=None, hi=None,
                                       higher_is_better=higher, winner=None).to_dict())  # fmt: skip
            continue
        r = a / b
        lo, hi = ratio_interval(rel_a, rel_b, r, higher)
        win = _winner(pair[0], pair[1], r, lo, hi, higher)
        out["ratios"].append(Ratio(figure=key, label=label, a=a, b=b, ratio=r, lo=lo, hi=hi,
                                   higher_is_better=higher, winner=win).to_dict())  # fmt: skip
    out["interval_rule"] = (
        "each side's 80 % measured-error interval of output tok/s per chip, independent, combined at the extremes "
        "(lo = loA/hiB, hi = hiA/loB): covers the ratio at least 64 % of the time"
    )
    return out


def sentence(r: Mapping[str, Any], a: str, b: str) -> str:
    """``gb200-nvl72 wins, 3.30x`` / ``too close to call`` / ``unknown``: who wins and by how much."""
    if r["ratio"] is None or r["winner"] is None:
        return "unknown (a figure is missing)"
    if r["winner"] == TOO_CLOSE:
        return TOO_CLOSE
    factor = r["ratio"] if r["winner"] == a else 1 / r["ratio"]
    if not r["higher_is_better"]:
        factor = 1 / factor
    return f"{r['winner']} wins, {factor:.2f}x" + ("" if r["higher_is_better"] else " cheaper")
