"""`simulate`'s fault table: one row per fault with its policy, pause and its parts, degraded capacity,
time back to 95 % throughput, the requests it cut, and TTFT/TPOT inside its window."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def faults_table(d: dict[str, Any]) -> Table:
    f = d["faults"]
    t = Table(title=f"faults: policy {f['policy']}, cut requests {f['requests_mode']}")
    for col in ("at s", "kind", "dies", "policy", "pause s", "parts", "degraded", "back 95% s", "cut", "TTFT p99 ms"):
        t.add_column(col, justify="left" if col in ("kind", "policy", "parts") else "right")
    for e in f["events"]:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in e["pause_parts_s"].items())
        ttft = e.get("window_ttft_ms")
        back = e.get("back_to_95pct_s")
        t.add_row(
            f"{e['at_s']:.1f}",
            e["kind"],
            str(e["dies"]),
            e["policy"],
            f"{e['pause_s']:.2f}",
            parts,
            f"{e['degraded_fraction']:.1%}",
            "-" if back is None else f"{back:.0f}",
            f"{e['cut']} ({e['retried']} retried, {e['failed']} failed)",
            "-" if ttft is None else f"{ttft['p99']:,.0f}",
        )
    r = f["requests"]
    t.caption = (
        f"availability {f['availability']:.2%} of the decode capacity; {r['cut']} requests cut, {r['retried']} "
        f"retried ({r['retried_done']} finished), {r['failed']} failed"
    )
    return t
