"""Rich tables for the human-readable output of each command."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cloudmatrix.cli.layout import fitted_tables


def catalog_systems_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Systems (derived totals)")
    for col in ("id", "chip", "chips", "dies", "BF16 PF", "INT8 PF", "HBM TB", "HBM TB/s", "scale-up TB/s", "kW"):
        t.add_column(col, justify="left" if col in ("id", "chip") else "right")
    for r in rows:
        t.add_row(
            r["id"],
            r["chip"],
            str(r["chips"]),
            str(r["dies"]),
            f"{r['bf16_pflops']:.1f}",
            f"{r['int8_pflops']:.1f}",
            f"{r['hbm_tb']:.1f}",
            f"{r['hbm_bw_tb_s']:.0f}",
            f"{r['scale_up_tb_s']:.0f}",
            f"{r['power_kw']:.0f}",
        )
    return t


def catalog_keys_table(
    rows: list[dict[str, Any]], title: str = "Scenario keys for --set key=value (simulate, serve)"
) -> Table:
    t = Table(title=title)
    for col in ("key", "type", "default"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["key"], r["type"], r["default"])
    return t


def catalog_models_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Models")
    for col in ("id", "type", "attention", "layers", "experts", "total B", "active B", "KV B/token (BF16)"):
        t.add_column(col, justify="left" if col in ("id", "type", "attention", "experts") else "right")
    for r in rows:
        t.add_row(
            r["id"],
            r["model_type"],
            r["attention"],
            str(r["layers"]),
            r["experts"],
            f"{r['total_params_b']:.1f}",
            f"{r['active_params_b']:.1f}",
            f"{r['kv_bytes_per_token_bf16']:,.0f}",
        )
    return t


def estimate_table(d: dict[str, Any]) -> list[Table]:
    head = Table(title=f"{d['model']} {d['phase']} on {d['system']} ({d['chips']} chips, EP{d['ep']})")
    head.add_column("metric")
    head.add_column("value", justify="right")
    keys = [
        "step_ms",
        "tpot_ms",
        "batch_time_ms",
        "throughput_per_chip_tok_s",
        "tokens_per_step",
        "microbatch",
        "roofline_step_ms",
        "max_batch_per_chip_by_kv",
    ]
    intervals = d.get("intervals", {})
    for k in keys:
        if k in d:
            v = d[k]
            head.add_row(k, with_interval(f"{v:,.2f}" if isinstance(v, float) else str(v), intervals.get(k)))
    if interval_notes(intervals):
        head.add_row("intervals", interval_notes(intervals))
    mem = d["memory_per_die_gb"]
    head.add_row(
        "memory per die (GB)",
        f"{mem['total']:.1f} of {mem['capacity']:.0f} (weights {mem['weights']:.1f}, "
        f"KV {mem['kv']:.1f}, buffers {mem['buffers']:.1f})",
    )
    if "expert_load" in d:
        load = d["expert_load"]
        head.add_row(
            "busiest expert die / mean",
            f"{load['busiest_over_mean']:.3f} (EPLB {load['eplb']}, routing {load['routing']})",
        )
    layer = Table(title="Per-layer breakdown (µs, representative layer; critical path)")
    layer.add_column("op")
    layer.add_column("µs/layer", justify="right")
    for op, us in d["layer_breakdown_us"].items():
        layer.add_row(op, f"{us:,.1f}")
    for op, us in d["overlapped_us"].items():
        layer.add_row(f"[dim]{op} (overlapped)[/dim]", f"[dim]{us:,.1f}[/dim]")
    step = Table(title="Step breakdown (µs per step, sums to the step time)")
    step.add_column("op")
    step.add_column("µs/step", justify="right")
    step.add_column("roofline µs", justify="right")
    for op, us in sorted(d["breakdown_us"].items(), key=lambda kv: -kv[1]):
        step.add_row(op, f"{us:,.0f}", f"{d['roofline_us'].get(op, 0.0):,.0f}")
    return [head, layer, step]


def _fmt(v: float) -> str:
    return f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"


def interval_notes(intervals: dict[str, Any]) -> str:
    """Why an answer's intervals are wide or unknown: each extrapolation reason and unknown note, once."""
    notes = [r for iv in intervals.values() for r in iv.get("extrapolating", [])]
    unknown = [iv["note"] for iv in intervals.values() if iv.get("lo") is None and iv.get("note")]
    parts = [f"extrapolating: {'; '.join(dict.fromkeys(notes))}"] if notes else []
    return "; ".join(parts + list(dict.fromkeys(unknown)))


def with_interval(text: str, iv: dict[str, Any] | None) -> str:
    """``2,032 (1,850–2,210, 80 %)``: the figure with the interval measured error gives it, or a note."""
    if iv is None:
        return text
    if iv["lo"] is None:
        return f"{text} (unknown)"
    beyond = ", extrapolating" if iv.get("extrapolating") else ""
    return f"{text} ({_fmt(iv['lo'])}–{_fmt(iv['hi'])}, {iv['coverage']:.0%}{beyond})"


def reproduce_table(d: dict[str, Any]) -> Table:
    t = Table(title=d["title"])
    for col in ("id", "quantity", "published", "predicted", "error %", "tol %", "role"):
        t.add_column(col, justify="left" if col in ("id", "quantity", "role") else "right")
    for r in d["rows"]:
        ok = abs(r["error_pct"]) <= r["tolerance_pct"]
        err = f"[{'green' if ok else 'red'}]{r['error_pct']:+.1f}[/]"
        t.add_row(
            r["id"],
            r["quantity"],
            _value(r["published"], r["unit"]),
            _value(r["predicted"], r["unit"]),
            err,
            f"{r['tolerance_pct']:.0f}",
            r["role"],
        )
    t.caption = (
        f"median |error| {d['median_abs_error_pct']} % (predicted rows: "
        f"{d['predicted_median_abs_error_pct']} %), max |error| {d['max_abs_error_pct']} %"
    )
    return t


def _value(v: float, unit: str) -> str:
    return f"{v:.3f}x" if unit == "x" else f"{v:,.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}"


def ablate_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Ablations on the paper deployment (each optimisation off, one at a time)")
    for col in ("phase", "optimisation", "tok/s/chip on", "tok/s/chip off", "gain %", "latency ms on", "off", "Δ %"):
        t.add_column(col, justify="left" if col in ("phase", "optimisation") else "right")
    for r in rows:
        off = "infeasible" if r["throughput_off"] is None else f"{r['throughput_off']:,.0f}"
        t.add_row(
            r["phase"],
            r["optimisation"],
            f"{r['throughput_on']:,.0f}",
            off,
            _pct(r["throughput_gain_pct"]),
            f"{r['latency_on_ms']:,.1f}",
            "-" if r["latency_off_ms"] is None else f"{r['latency_off_ms']:,.1f}",
            _pct(r["latency_change_pct"]),
        )
    notes = [f"{r['optimisation']} off: {r['note']}" for r in rows if r["note"]]
    t.caption = "latency: TPOT (decode), batch time = TTFT without queueing (prefill). " + " ".join(notes)
    return t


def simulate_table(d: dict[str, Any]) -> Table:
    t = Table(
        title=f"simulate {d['scenario']}: {d['num_requests']} requests in {d['sim_time_s']:.1f} s simulated "
        f"({d['wall_time_s']:.1f} s wall)"
    )
    t.add_column("metric")
    for col in ("p50", "p90", "p99", "mean", "p50 measured-error interval"):
        t.add_column(col, justify="right")
    iv = d.get("intervals", {})
    t.caption = interval_notes(iv) or None
    for key in ("ttft_ms", "tpot_ms", "e2e_ms", "queue_ms", "kv_transfer_ms"):
        v = d[key]
        band = iv.get(f"{key}.p50")
        t.add_row(key, *(f"{v[c]:,.1f}" for c in ("p50", "p90", "p99", "mean")), with_interval("", band).strip(" ()"))
    thr = d["throughput_per_chip_tok_s"]
    decode = with_interval(f"{thr['decode']:,.0f}", iv.get("throughput_per_chip_tok_s.decode"))
    t.caption = (
        f"throughput per chip: prefill {thr['prefill']:,.0f} tok/s, decode {decode} tok/s; "
        f"SLO attainment {d['slo_attainment']:.1%}; goodput {d['goodput_req_s']:.1f} req/s; "
        f"KV occupancy mean {d['kv_occupancy']['mean']:.1%}. Bound: prefill pool busy "
        f"{d['bound']['prefill_busy']:.0%}, decode batches {d['bound']['decode_batch_fill']:.0%} full: the "
        f"{d['bound']['pool']} pool sets the rate{_bound_advice(d)}"
    )
    return t


def _bound_advice(d: dict[str, Any]) -> str:
    """What would balance the pools of the scenario simulated (the paper's scenario has a loaded twin)."""
    b = d["bound"]
    if b["prefill_busy"] < 0.5 and b["decode_batch_fill"] < 0.5:
        return " (neither pool is loaded: a higher workload.arrivals.rate_per_s, or more requests, would load them)"
    if b["pool"] == "prefill" and b["decode_batch_fill"] < 0.5:
        if d["scenario"] == "cm384-paper":
            return " (decode runs small batches; `simulate cm384-decode-loaded` loads it to the paper's point)"
        return (
            f" (decode runs small batches: more prefill instances, or fewer decode chips, would balance {d['system']})"
        )
    if b["pool"] == "decode" and b["prefill_busy"] < 0.5:
        return " (prefill idles: fewer prefill instances would free chips for decode)"
    return ""


COMPARE_COLUMNS = (
    "system",
    "mode",
    "prec",
    "batch/chip",
    "TPOT ms",
    "TTFT ms",
    "decode tok/s/chip",
    "prefill tok/s/chip",
    "out tok/s/chip",
    "80 % interval",
    "out tok/s/system",
    "per kW",
    "per $M",
    "$/Mtok",
    "J/tok",
    "chips for target",
)


def _economics_cells(e: dict[str, Any]) -> list[str]:
    """$ per million output tokens and J per output token, or ``?`` without a power breakdown."""
    cost, joules = e.get("usd_per_mtok"), e.get("j_per_token")
    return ["?" if cost is None else f"{cost:.3f}", "?" if joules is None else f"{joules:.2f}"]


def _interval_cell(r: dict[str, Any], key: str = "output_tok_s_per_chip", fmt: str = ",.0f") -> str:
    """The headline figure's 80 % interval, or ``unknown`` (never a zero-width range)."""
    iv = (r.get("intervals") or {}).get(key) or {}
    if iv.get("lo") is None or iv.get("hi") is None:
        return "unknown"
    return f"{iv['lo']:{fmt}}–{iv['hi']:{fmt}}"


# compare's headline figures with an interval: (JSON key, column, format)
COMPARE_INTERVALS = (
    ("tpot_ms", "TPOT ms", ".1f"),
    ("ttft_ms", "TTFT ms", ",.0f"),
    ("decode_tok_s_per_chip", "decode tok/s/chip", ",.0f"),
    ("output_tok_s_per_chip", "out tok/s/chip", ",.0f"),
)


def compare_interval_tables(d: dict[str, Any], width: int = 160) -> list[Table]:
    """Every headline figure of every system with its 80 % interval or ``unknown`` (split to fit ``width``),
    then why each system's out tok/s per chip interval reaches beyond the validated domain (every figure's
    reasons are in the JSON)."""
    feasible = [r for r in d["systems"] if r["feasible"]]
    columns = ("system", *(c for _, c, _ in COMPARE_INTERVALS))
    rows = [
        [r["system"], *(f"{r[key]:{fmt}} ({_interval_cell(r, key, fmt)})" for key, _, fmt in COMPARE_INTERVALS)]
        for r in feasible
    ]
    title = "80 % intervals: where measured values are expected to fall (docs/validation.md §6)"
    tables = fitted_tables(title, columns, rows, left=("system",), width=width)
    reasons = Table(title="why the out tok/s per chip interval extrapolates")
    for col in ("system", "extrapolating"):
        reasons.add_column(col)
    for r in feasible:
        why = ((r.get("intervals") or {}).get("output_tok_s_per_chip") or {}).get("extrapolating", [])
        if why:
            reasons.add_row(r["system"], "; ".join(why))
    return [*tables, reasons] if reasons.row_count else tables


def compare_table(d: dict[str, Any], width: int = 160) -> list[Table]:
    w = d["workload"]
    rows: list[list[str]] = []
    why = Table(title="deployment and what bounds it (share of the step)")
    for col in ("system", "deployment", "why"):
        why.add_column(col)
    for r in d["systems"]:
        name = r["deployment"] + (" (assumed)" if r.get("assumed_deployment") else "")
        why.add_row(r["system"], name, r["why"] if r["feasible"] else f"[red]{r['reason']}[/]")
        if not r["feasible"]:
            mark = "[yellow]not run[/]" if r.get("not_run") else "[red]infeasible[/]"
            rows.append([r["system"], "", r["precision"], mark, *[""] * (len(COMPARE_COLUMNS) - 4)])
            continue
        target = "" if r["chips_for_target"] is None else f"{r['chips_for_target']:,}"
        rows.append(
            [
                r["system"],
                r["mode"],
                r["precision"],
                f"{r['batch_per_chip']:g}",
                f"{r['tpot_ms']:.1f}",
                f"{r['ttft_ms']:,.0f}",
                f"{r['decode_tok_s_per_chip']:,.0f}",
                f"{r['prefill_tok_s_per_chip']:,.0f}",
                f"{r['output_tok_s_per_chip']:,.0f}",
                _interval_cell(r),
                f"{r['output_tok_s_per_system']:,.0f}",
                f"{r['output_tok_s_per_kw']:,.0f}",
                f"{r['output_tok_s_per_musd']:,.0f}",
                *_economics_cells(r.get("economics") or {}),
                target,
            ]
        )
    caption = (
        "out tok/s: output tokens with prefill and decode pools sized for the workload's input/output mix; "
        "per kW and per $M use each system's catalog power and price (sources in the catalog); $/Mtok: TCO per "
        "million output tokens, J/tok: IT energy per output token at the operating load (docs/compare.md)"
    )
    columns: tuple[str, ...] = COMPARE_COLUMNS
    if all(r.get("chips_for_target") is None for r in d["systems"]):  # no --target-rate: no empty column
        columns, rows = columns[:-1], [row[:-1] for row in rows]
    caption += "; 80 % interval: where measured out tok/s per chip is expected to fall (docs/validation.md §6)"
    title = f"{d['model']}: {w['input_len']}/{w['output_len']} tokens, TPOT SLO {d['tpot_slo_ms']:g} ms"
    tables = fitted_tables(title, columns, rows, left=("system", "mode", "prec"), caption=caption, width=width)
    return [*tables, why, *compare_interval_tables(d, width)]
