"""The sweep's three heat maps as PNG bytes: ratio A / B per system, per chip and per kW over input length and
TPOT SLO, on a diverging log scale centred on 1, the break-even line (contour at 1) in black, each cell's
ratio written in it, and cells beyond the model's context or infeasible on a side greyed with their mark."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from cloudmatrix.report.plot import png_bytes  # noqa: E402
from cloudmatrix.studies.sweep import grid, length_label, log2_limit, marks  # noqa: E402


def where_each_wins(values: np.ndarray) -> str:
    """The panel's summary: one side everywhere, or both."""
    drawn = values[~np.isnan(values)]
    if drawn.size == 0:
        return "nothing drawn"
    if (drawn > 0).all():
        return "A ahead everywhere (no break-even here)"
    if (drawn < 0).all():
        return "B ahead everywhere (no break-even here)"
    return "black line: break-even"


def _panel(ax: Axes, d: dict[str, Any], key: str, title: str, limit: float) -> Any:
    ratios = grid(d, key)
    values = np.array([[math.log2(r) if r else np.nan for r in row] for row in ratios])
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
    ax.set_facecolor("#d9d9d9")  # masked cells
    for i, row in enumerate(ratios):
        for j, r in enumerate(row):
            mark = marks(d)[i][j]
            text = f"{r:.2f}" if r else mark
            dark = r is not None and abs(math.log2(r)) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    if np.isfinite(values).sum() >= 4 and np.nanmin(values) < 0 < np.nanmax(values):
        ax.contour(np.ma.masked_invalid(values), levels=[0.0], colors="black", linewidths=2.0, origin="lower")
    ax.set_xticks(range(len(d["input_lens"])), [length_label(n) for n in d["input_lens"]])
    ax.set_yticks(range(len(d["tpot_slos_ms"])), [f"{t:g}" for t in d["tpot_slos_ms"]])
    ax.set_xlabel("input length (tokens)")
    ax.set_ylabel("TPOT SLO (ms)")
    ax.set_title(f"{title}: {where_each_wins(values)}", fontsize=10)
    return image


def sweep_png(d: dict[str, Any]) -> bytes:
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), dpi=110)
    limit = log2_limit(d)
    images = [_panel(ax, d, p["key"], p["title"], limit) for ax, p in zip(axes, d["panels"], strict=True)]
    ttft = "no TTFT SLO" if d["ttft_slo_ms"] is None else f"TTFT SLO {d['ttft_slo_ms']:g} ms"
    fig.suptitle(
        f"A = {d['a']} / B = {d['b']}: {d['model']}, output {d['output_len']:,} tokens, {ttft}. "
        "Blue: A ahead, red: B ahead; grey: ctx = beyond the model's context, x A / x B = no SLO met on that side",
        fontsize=10,
    )
    bar = fig.colorbar(images[-1], ax=axes, shrink=0.85, pad=0.01)
    ticks = [t for t in range(-math.ceil(limit), math.ceil(limit) + 1)]
    bar.set_ticks(ticks, labels=[f"{2.0**t:g}x" for t in ticks])
    bar.set_label("ratio A / B")
    return png_bytes(fig)
