"""The trade-off plot the field uses: throughput per chip against tokens/s per user, one curve per system."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402

from cloudmatrix.studies.compare import SystemResult  # noqa: E402


def tradeoff_png(results: list[SystemResult], path: Path, title: str, tpot_slo_ms: float) -> None:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for r in results:
        if not r.curve:
            continue
        users, chips = zip(*sorted(r.curve), strict=True)
        ax.plot(users, chips, marker="o", markersize=3, label=f"{r.system} ({r.precision})")
        if r.feasible:
            ax.scatter([1e3 / r.tpot_ms], [r.decode_tok_s_per_chip], s=60, edgecolors="black", zorder=3)
    ax.axvline(1e3 / tpot_slo_ms, color="grey", linestyle="--", linewidth=1, label=f"TPOT SLO {tpot_slo_ms:g} ms")
    ax.set_xlabel("tokens/s per user (1 / TPOT)")
    ax.set_ylabel("decode throughput per chip (tokens/s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
