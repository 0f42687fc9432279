"""Decode throughput over a simulated run with its faults marked (`simulate --fault-plot`): the fault, the
end of its pause and the repaired dies' return, from the result's fault timeline. PNG bytes; the CLI
writes them."""

from __future__ import annotations

from typing import Any

from cloudmatrix.report.plot import plt, png_bytes


def fault_png(d: dict[str, Any]) -> bytes:
    f = d["faults"]
    series = f["decode_tok_s_series"]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    width = series["bin_s"]
    ax.plot([i * width for i in range(len(series["values"]))], series["values"], lw=1, label="decode tok/s")
    for n, e in enumerate(f["events"]):
        first = n == 0
        ax.axvline(e["at_s"], color="red", ls="-", lw=1, label="fault" if first else None)
        ax.axvline(e["resume_at_s"], color="orange", ls="--", lw=1, label="serving again" if first else None)
        if "full_capacity_at_s" in e:
            ax.axvline(e["full_capacity_at_s"], color="green", ls=":", lw=1, label="full capacity" if first else None)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("decode tokens / s (whole pool)")
    ax.set_title(f"{d['scenario']}: {f['policy']} (availability {f['availability']:.2%})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return png_bytes(fig)
