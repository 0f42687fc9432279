"""The parity plot of `validate`: predicted against measured on log-log axes, one panel per metric, one
marker per system and one colour per stack, filled for predicted rows and hollow for fitted ones, with the
y = x line, a ±25 % band and each system's median |error| (predicted rows) in the panel's legend."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # PNG bytes only; no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from cloudmatrix.report.plot import png_bytes  # noqa: E402

PANELS = {  # metric -> (title, unit)
    "output_tok_s_per_chip": ("output throughput per chip", "tok/s"),
    "tok_s_per_chip": ("input + output throughput per chip", "tok/s"),
    "throughput_per_chip_tok_s": ("steady-state throughput per chip", "tok/s"),
    "tpot_ms": ("median TPOT", "ms"),
    "ttft_ms": ("median TTFT", "ms"),
    "p99_ttft_ms": ("p99 TTFT", "ms"),
}
MARKERS = "osD^vP*Xh<>"
BAND = 0.25


def parity_png(entries: Sequence[dict[str, Any]], title: str) -> bytes:
    answered = [e for e in entries if e["status"] == "ok" and e["predicted"]]
    metrics = [m for m in PANELS if any(e["metric"] == m for e in answered)]
    if not metrics:
        metrics = ["output_tok_s_per_chip"]
    systems = sorted({e["system"] for e in entries})
    stacks = sorted({e["stack"] for e in entries})
    marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(systems)}
    colour = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(stacks)}
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.8 * rows + 0.9), dpi=110, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        _panel(ax, [e for e in answered if e["metric"] == metric], metric, marker, colour)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    handles = [Line2D([], [], linestyle="", marker="s", color=colour[s], label=s) for s in stacks]
    handles += [
        Line2D([], [], linestyle="", marker="o", color="grey", label="predicted row"),
        Line2D([], [], linestyle="", marker="o", markerfacecolor="none", color="grey", label="fitted row"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, title="stack (colour)")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.09, 1, 0.97))
    return png_bytes(fig)


def _tick(v: float, _pos: int) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _panel(ax: Any, points: list[dict[str, Any]], metric: str, marker: dict, colour: dict) -> None:
    name, unit = PANELS[metric]
    values = [v for e in points for v in (e["measured"], e["predicted"])] or [1.0, 10.0]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    line = [lo, hi]
    ax.plot(line, line, color="black", linewidth=1)
    ax.fill_between(line, [v * (1 - BAND) for v in line], [v * (1 + BAND) for v in line], color="grey", alpha=0.15)
    legend = []
    for system in sorted({e["system"] for e in points}):
        mine = [e for e in points if e["system"] == system]
        for e in mine:
            filled = e["role"] == "predicted"
            ax.scatter(
                [e["measured"]],
                [e["predicted"]],
                marker=marker[system],
                s=26,
                facecolors=colour[e["stack"]] if filled else "none",
                edgecolors=colour[e["stack"]],
                linewidths=0.9,
            )
        pred = [abs(e["error_pct"]) for e in mine if e["role"] == "predicted"]
        med = f"{statistics.median(pred):.0f} %" if pred else "no predicted rows"
        legend.append(Line2D([], [], linestyle="", marker=marker[system], color="dimgrey", label=f"{system}: {med}"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    wide = math.log10(hi / lo) > 2.5  # label decades only, or 1-2-5 steps on a narrow range
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(_tick))
        axis.set_minor_formatter(NullFormatter())  # log minor labels collide
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.set_title(f"{name} (band ±{BAND:.0%})", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(handles=legend, fontsize=7, title="median |error|, predicted", title_fontsize=7, loc="upper left")
