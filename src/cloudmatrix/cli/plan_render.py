"""`plan`'s tables: the ranked deployments beside their simulated check, and the captions (the search, the
economics, intervals, availability)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich's tables load when a table is drawn, not for --json
    from rich.table import Table


def _tp(tp: int) -> str:
    return f" TP{tp}" if tp > 1 else ""


def _ep(ep: int | None) -> str:
    return f"EP{ep}" if ep else "dense"


COLUMNS = ("#", "prec", "prefill", "decode", "chips", "req/s", "TPOT@cap") + (
    "out tok/s/chip",
    "sim",
    "TTFT ms",
    "sim",
    "TPOT ms",
    "sim",
    "check",
)
LEFT = ("prec", "prefill", "decode", "check")
SHORT = {"output_tok_s_per_chip": "tok/s", "ttft_ms": "TTFT", "tpot_ms": "TPOT"}


def plan_tables(d: dict[str, Any], width: int = 160) -> list[Table]:
    """The ranked deployments with their analytic figures beside the simulated ones a check measured, and
    the search summary; split into several tables (rank repeated) where the screen is narrow."""
    from cloudmatrix.cli.layout import fitted_tables

    w = d["workload"]
    title = (
        f"plan {d['model']} on {d['system']} ({d['chips']} chips): {w['name']}, "
        f"TTFT SLO {d['ttft_slo_ms']:g} ms, TPOT SLO {d['tpot_slo_ms']:g} ms"
    )
    rows = [_row(r) for r in d["ranked"]]
    tables = fitted_tables(title, COLUMNS, rows, left=LEFT, caption="\n".join(_caption(d)), width=width)
    tables[-1].caption_justify = "left"  # notes read as lines of text, not a centred block
    return tables


def _row(r: dict[str, Any]) -> list[str]:
    p, c, chk = r["prefill"], r["decode"], r["check"]
    sim = chk["simulated"] if chk else {}
    return [
        str(r["rank"]),
        r["precision"],
        f"{p['instances']}×{p['chips']} {_ep(p['ep'])} TP{max(p['tp'], p['attention_tp'])}"
        f"{' CP' + str(p['cp']) if p.get('cp', 1) > 1 else ''} "
        f"{p['tokens_per_chip'] // 1024}K{' mb' if p['microbatch'] else ''}",
        f"{c['instances']}×{c['chips']} {_ep(c['ep'])}{_tp(c['tp'])} "
        f"b{c['batch_per_chip']} MTP{c['mtp']}{' mb' if c['microbatch'] else ''}",
        str(r["chips"]),
        f"{r['rate_req_s']:,.1f}",
        f"{r['tpot_ms']:.1f}",
        f"{r['output_tok_s_per_chip']:,.1f}",
        _sim(sim, "output_tok_s_per_chip", ",.1f"),
        f"{r['ttft_ms']:,.0f}",
        _sim(sim, "ttft_ms", ",.0f"),
        f"{r['tpot_operating_ms']:.1f}" if r.get("tpot_operating_ms") is not None else "-",
        _sim(sim, "tpot_ms", ".1f"),
        _verdict(chk),
    ]


def _verdict(chk: dict[str, Any] | None) -> str:
    """``ok``, or each figure the simulation moved by more than 10 % with its error; what was simulated."""
    if not chk:
        return "-"
    off = [f"{SHORT.get(k, k)} {chk['error_pct'][k]:+.0f}%" for k in chk["flagged"]]
    text = ", ".join(off) or "ok"
    if chk["slice"]:
        text += f" (slice {chk['slice']['prefill_instances']}P+{chk['slice']['decode_instances']}D)"
    return text + ("" if chk["steady"] else " (not steady)")


def interval_caption(intervals: dict[str, Any]) -> str:
    """``tok/s 1,850–2,210 (80 %, stratum); TPOT …`` (80 % intervals), and once the reason the others have none."""
    parts, missing = [], []
    for key, iv in intervals.items():
        name = SHORT.get(key, key)
        if iv["lo"] is None:
            missing.append((name, iv.get("note", "no validation data")))
        else:
            beyond = f"; extrapolating: {', '.join(iv['extrapolating'])}" if iv.get("extrapolating") else ""
            parts.append(f"{name} {iv['lo']:,.1f}–{iv['hi']:,.1f} ({iv['coverage']:.0%}, {iv['stratum']}{beyond})")
    for note in dict.fromkeys(n for _, n in missing):
        names = ", ".join(name for name, n in missing if n == note)
        parts.append(f"{names}: {note}")
    return "; ".join(parts) or "none"


def _sim(sim: dict[str, float], key: str, spec: str) -> str:
    return format(sim[key], spec) if key in sim else "-"


def _caption(d: dict[str, Any]) -> list[str]:
    s, b = d["search"], d["best_decode"]
    pruned = ", ".join(f"{k} {v}" for k, v in s["pruned"].items()) or "none"
    refused = "; ".join(f"{k}: {v}" for k, v in s["infeasible_reasons"].items())
    lines = [
        f"{s['enumerated']} candidates, pruned {pruned}; {s['costed']} costed"
        + (f" at {d['candidates_per_s']:,.0f}/s" if d.get("candidates_per_s") else "")
        + (f", {s['infeasible']} refused by the estimate ({refused})" if s["infeasible"] else "")
        + f"; {s['deployments']} deployments, {s['meeting_slo']} within the SLOs",
    ]
    if d["why_empty"]:
        lines.append(f"no deployment within the SLOs: {d['why_empty']}")
    if d["ranked"] and (e := d["ranked"][0].get("economics")) and e["usd_per_mtok"] is not None:
        lines.append(
            f"#1 costs ${e['usd_per_mtok']:.3f} per million output tokens (TCO), {e['j_per_token']:.2f} J/token"
        )
    if d["ranked"]:
        lines.append(
            "TPOT@cap: at the decode batch cap, where the SLO is judged; out tok/s, TTFT, TPOT: at the planned "
            "rate, beside the simulated (sim); check: figures the simulation moves by over 10 %"
        )
    if b:
        lines.append(
            f"best decode instance within the TPOT SLO: {b['label']} {b['precision']}, "
            f"{b['tok_s_per_chip']:,.0f} tok/s per chip at TPOT {b['tpot_ms']:.1f} ms"
        )
    if d.get("versus_compare"):
        lines.append(d["versus_compare"]["line"])
    if d["ranked"]:
        lines.append(f"#1 measured-error intervals: {interval_caption(d['ranked'][0].get('intervals', {}))}")
    if any(r.get("availability") for r in d["ranked"]):
        from cloudmatrix.cli.fault_render import availability_lines

        lines += availability_lines(d)
    lines += [f"#{r['rank']}: {r['check']['note']}" for r in d["ranked"] if r["check"] and r["check"]["note"]]
    if d["check_note"]:
        lines.append(d["check_note"])
    return lines
