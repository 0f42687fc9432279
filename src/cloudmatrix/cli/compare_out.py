"""`compare`'s verdict block and `compare --sweep`'s grid as terminal tables (rich)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cloudmatrix.studies.sweep import PANELS, SweepRequest, grid, marks, sweep
from cloudmatrix.studies.tco import split_overrides, system_hardware
from cloudmatrix.studies.verdict import sentence


def _figure(x: float | None, higher_is_better: bool) -> str:
    if x is None:
        return "?"
    return f"{x:,.0f}" if higher_is_better else f"{x:,.3f}"


def verdict_table(v: dict[str, Any]) -> Table | str:
    """The reference pair's ratios A / B with their intervals and the side that wins each."""
    a, b = v["a"], v["b"]
    if v["infeasible"]:
        why = "; ".join(f"{s}: {reason}" for s, reason in v["infeasible"].items())
        return f"verdict {a} against {b}: no verdict, infeasible under these conditions ({why})"
    t = Table(title=f"verdict: {a} (A) against {b} (B)", title_justify="left")
    for col, justify in (("", "left"), ("A", "right"), ("B", "right"), ("A / B", "right"),
                         ("interval", "right"), ("", "left")):  # fmt: skip
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in v["ratios"]:
        interval = "unknown" if r["lo"] is None else f"{r['lo']:.2f}–{r['hi']:.2f}"
        ratio = "?" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        hib = r["higher_is_better"]
        t.add_row(r["label"], _figure(r["a"], hib), _figure(r["b"], hib), ratio, interval, sentence(r, a, b))
    t.caption = (
        "output tok/s (per chip, per system, per kW, per $M of capital) and $ per million output tokens (lower is "
        "better); interval: " + v.get("interval_rule", "") + "; unknown where a side has no validation data"
    )
    t.caption_justify = "left"
    return t


def sweep_table(d: dict[str, Any], key: str, title: str) -> Table:
    """One panel of the sweep as text: ratio A / B per TPOT SLO (rows) and input length (columns)."""
    t = Table(title=f"{d['a']} / {d['b']} {title}", title_justify="left")
    t.add_column("TPOT SLO ms", justify="right")
    for n in d["input_lens"]:
        t.add_column(f"{n // 1024}K" if n % 1024 == 0 else str(n), justify="right")
    for tpot, row, mark in zip(d["tpot_slos_ms"], grid(d, key), marks(d), strict=True):
        t.add_row(f"{tpot:g}", *(f"{r:.2f}" if r else m for r, m in zip(row, mark, strict=True)))
    t.caption = (
        f"output {d['output_len']:,} tokens; > 1: {d['a']} ahead; ctx: beyond the model's context "
        f"({d['max_context']:,} tokens); x A / x B: no SLO met on that side"
        if d["max_context"]
        else f"output {d['output_len']:,} tokens; > 1: {d['a']} ahead; x A / x B: no SLO met on that side"
    )
    t.caption_justify = "left"
    return t


def sweep_tables(d: dict[str, Any]) -> list[Table]:
    return [sweep_table(d, key, title) for key, title in PANELS]


def compare_sweep(
    pair: tuple[str, str],
    model: str,
    osl: int,
    ttft_slo: float | None,
    mtp: int,
    mtp_acceptance: float,
    stack: str | None,
    overrides: tuple[str, ...],
) -> dict[str, Any]:
    """`compare --sweep`: the pair over input length x TPOT SLO (per kW on the ``--set`` power, if any)."""
    req = SweepRequest(pair=pair, model=model, output_len=osl, ttft_slo_ms=ttft_slo, mtp=mtp,
                       mtp_acceptance=mtp_acceptance, stack=stack)  # fmt: skip
    _, system_set = split_overrides(overrides)
    return sweep(req, {s: system_hardware(s, system_set) for s in pair})
