"""`simulate`'s fault table: one row per fault with its policy, pause and its parts, degraded capacity,
time back to 95 % throughput, the requests it cut, and TTFT/TPOT inside its window; and `plan --availability`'s
line per listed deployment."""

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


def plan_availability(d: dict[str, Any], result: Any, target: float) -> None:
    """Each listed deployment's availability under each recovery policy (planner/availability.py)."""
    from cloudmatrix.planner.availability import availability_options
    from cloudmatrix.planner.evaluate import job_for

    job = job_for(result.request, result.workload)
    for row, dep in zip(d["ranked"], result.listed, strict=True):
        row["availability"] = availability_options(dep, job, target)


def availability_lines(d: dict[str, Any]) -> list[str]:
    """``#1 availability (target 0.999, decode pool): restart 0.99952 (21 min/month) ...`` per listed row."""
    lines = []
    for r in d["ranked"]:
        a = r.get("availability")
        if not a:
            continue
        parts = []
        for o in a["options"]:
            cost = f", +{o['spares']} standby = +{o['extra_chips']} chips" if "spares" in o else ""
            lost = f", {o['experts_lost']} experts lost" if o.get("experts_lost") else ""
            lost += ", restarts: survivors cannot serve" if "restart" in o.get("falls_back_to", []) else ""
            parts.append(
                f"{o['policy']} {o['availability']:.5f} ({o['downtime_min_per_month']:,.1f} min/month{cost}{lost})"
                + (" meets" if o["meets"] else "")
            )
        note = f"; {a['note']}" if a.get("note") else ""
        lines.append(f"#{r['rank']} availability (target {a['target']:g}, {a['scope']}): " + "; ".join(parts) + note)
        red = a.get("redundant_experts")
        if red:
            lines.append(f"#{r['rank']} redundant experts for the target: " + redundancy_line(red))
    return lines


def long_horizon_table(name: str, s: dict[str, Any]) -> Table:
    """`simulate --long-horizon`: one row per fault window, the horizon's figures in the caption."""
    t = Table(title=f"{name}: {s['horizon_s'] / 3600:,.1f} h by fault windows and steady stretches")
    for col in ("window s", "faults", "kinds", "pauses s", "tokens lost"):
        t.add_column(col, justify="left" if col == "kinds" else "right")
    events = s["events"]
    for w in s["windows"]:
        mine = [e for e in events if w["start_s"] <= e["at_s"] <= w["end_s"]]
        t.add_row(
            f"{w['start_s']:,.0f}-{w['end_s']:,.0f}",
            str(w["faults"]),
            ", ".join(sorted({e["kind"] for e in mine})),
            ", ".join(f"{e['pause_s']:.1f}" for e in mine),
            f"{sum(e['decode_tokens_lost'] for e in mine):,.0f}",
        )
    t.caption = (
        f"steady {s['steady_decode_tok_s']:,.0f} decode tok/s (warm-up {s['warm_up_s']:.0f} s); "
        f"{s['simulated_s'] / max(s['horizon_s'], 1e-9):.2%} of the horizon simulated; "
        f"{s['decode_tokens']:,.0f} decode tokens, {s['decode_tokens_lost']:,.0f} lost to faults; "
        f"availability {s['availability']:.5f}"
    )
    return t


def redundancy_line(red: dict[str, Any]) -> str:
    """``128 (6 slots per die): 0.99992, no expert lost; +2.55 GB HBM per die (1.3 chips), step x1.044``."""
    if not red["reachable"]:
        return f"not reachable: {red['note']}"
    if red["extra_hbm_gb_per_die"] == 0:
        return f"{red['redundant_experts']}, the deployment's own ({red['availability']:.5f}, no expert lost)"
    return (
        f"{red['redundant_experts']} ({red['slots_per_die']} slots per die): {red['availability']:.5f}, no expert "
        f"lost on a die or node loss; +{red['extra_hbm_gb_per_die']:.2f} GB HBM per die ({red['chip_equivalent']:.1f} "
        f"chips of HBM), healthy step x{red['step_ratio']:.3f}"
    )
