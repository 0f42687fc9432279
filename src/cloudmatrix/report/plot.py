"""The trade-off plot the field uses: throughput per chip against tokens/s per user, one curve per system.
Plots are rendered to PNG bytes; the CLI writes them."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # PNG bytes only; no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cloudmatrix.studies.compare import SystemResult  # noqa: E402


def tradeoff_png(results: list[SystemResult], title: str, tpot_slo_ms: float) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for r in results:
        if not r.curve:
            continue
        users, chips = zip(*sorted(r.curve), strict=True)
        mode = ", co-located: decode and prefill share the chips" if r.mode == "aggregated" else ""
        ax.plot(users, chips, marker="o", markersize=3, label=f"{r.system} ({r.precision}{mode})")
        if r.feasible:
            x, y = 1e3 / r.tpot_ms, r.decode_tok_s_per_chip
            tput = r.intervals.get("decode_tok_s_per_chip")
            hollow = not tput or tput["lo"] is None  # unknown: a hollow marker and no bar, never a zero-width one
            if hollow:
                ax.scatter([x], [y], s=60, edgecolors="black", facecolors="none", zorder=3)
            else:
                ax.scatter([x], [y], s=60, edgecolors="black", zorder=3)
            _error_bars(ax, x, y, r.intervals.get("tpot_ms"), r.intervals.get("decode_tok_s_per_chip"))
    return _finish(fig, ax, title, "output tokens/s per decode chip (co-located: per chip)", tpot_slo_ms)


def _error_bars(ax: Axes, x: float, y: float, tpot: dict | None, tput: dict | None) -> None:
    """The measured-error intervals of the operating point as bars from lo to hi (tok/s per user is 1 / TPOT,
    so its bar is the TPOT interval inverted). Where the twin is biased a bar need not cross its marker;
    no bar where no validation data exists."""
    if tput and tput["lo"] is not None:
        ax.vlines([x], [tput["lo"]], [tput["hi"]], colors="black", linewidth=0.8, zorder=2)
    if tpot and tpot["lo"] is not None:
        ax.hlines([y], [1e3 / tpot["hi"]], [1e3 / tpot["lo"]], colors="black", linewidth=0.8, zorder=2)


def _finish(fig: Figure, ax: Axes, title: str, ylabel: str, tpot_slo_ms: float) -> bytes:
    """Shared frame of the trade-off plots: the TPOT SLO as a dashed line, labels, legend; the PNG's bytes."""
    ax.axvline(1e3 / tpot_slo_ms, color="grey", linestyle="--", linewidth=1, label=f"TPOT SLO {tpot_slo_ms:g} ms")
    ax.set_xlabel("tokens/s per user (1 / TPOT)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def pareto_png(
    points: list[tuple[float, float]],
    front: list[tuple[float, float]],
    chosen: tuple[float, float] | None,
    title: str,
    tpot_slo_ms: float,
) -> bytes:
    """The planner's deployments as (tokens/s per user, output tokens/s per chip), the Pareto front as a
    line, the chosen deployment starred and the TPOT SLO as a dashed line."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=8, color="lightgrey", label="deployments (pools rate-matched)")
    if front:
        fx, fy = zip(*sorted(front), strict=True)
        ax.plot(fx, fy, marker="o", markersize=4, color="tab:blue", label="Pareto front")
    if chosen is not None:
        ax.scatter([chosen[0]], [chosen[1]], marker="*", s=220, color="tab:red", zorder=3, label="chosen")
    return _finish(fig, ax, title, "output tokens/s per chip (whole deployment)", tpot_slo_ms)
