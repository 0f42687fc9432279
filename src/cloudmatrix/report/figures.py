"""The report's interactive figures (plotly): compare per chip / system / kW / $ with the measured-error
intervals as error bars, throughput against interactivity in the style of InferenceMAX's Pareto plots, the
operating points' step by operator against the roofline, reproduce's published-vs-predicted, and the
validation parity plot. Hover shows the numbers; clicking a legend entry toggles a system."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
COMPARE_PANELS = (
    ("output_tok_s_per_chip", "output tok/s per chip"),
    ("output_tok_s_per_system", "output tok/s per system"),
    ("output_tok_s_per_kw", "output tok/s per kW"),
    ("output_tok_s_per_musd", "output tok/s per $M"),
)
PARITY_METRICS = (
    ("output_tok_s_per_chip", "output tok/s per chip"),
    ("tpot_ms", "TPOT (ms)"),
    ("ttft_ms", "TTFT (ms)"),
)
BAND = 0.25


def _colour(names: list[str]) -> dict[str, str]:
    """Distinct colours: plotly's D3 set for up to ten names, its 48 Dark24 + Light24 beyond."""
    palette = qualitative.D3 if len(names) <= len(qualitative.D3) else qualitative.Dark24 + qualitative.Light24
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE, title=title, height=height, margin={"l": 60, "r": 20, "t": 60, "b": 50}, autosize=True
    )
    return fig


def _band(r: dict[str, Any]) -> dict[str, Any] | None:
    """A system's output-per-chip interval, or None where it is unknown (no basis: no bar is drawn)."""
    band = (r.get("intervals") or {}).get("output_tok_s_per_chip") or {}
    return band if band.get("lo") is not None and band.get("hi") is not None else None


def compare_figure(compare: dict[str, Any]) -> go.Figure:
    """Four panels; the error bar is the output-per-chip interval, scaled with each panel's quantity. A system
    whose interval is unknown is a hollow bar with no error bar (a zero-width bar would read as exact)."""
    rows = [r for r in compare["systems"] if r["feasible"]]
    colours = _colour([r["system"] for r in rows])
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in COMPARE_PANELS], vertical_spacing=0.18)
    for i, (key, label) in enumerate(COMPARE_PANELS):
        for known in (True, False):
            mine = [r for r in rows if (_band(r) is not None) == known]
            if mine:
                fig.add_trace(_compare_bars(mine, key, label, known, colours), row=i // 2 + 1, col=i % 2 + 1)
    w = compare["workload"]
    title = f"{compare['model']}, {w['input_len']}/{w['output_len']} tokens, TPOT SLO {compare['tpot_slo_ms']:g} ms"
    fig = _layout(fig, title, 720)
    fig.update_layout(margin={"t": 90})
    return fig


def _compare_bars(rows: list[dict[str, Any]], key: str, label: str, known: bool, colours: dict[str, str]) -> go.Bar:
    names = [r["system"] for r in rows]
    values = [r[key] for r in rows]
    if not known:
        return go.Bar(
            x=names,
            y=values,
            name=f"{label} (interval unknown)",
            marker={"color": "rgba(0,0,0,0)", "line": {"color": [colours[n] for n in names], "width": 2}},
            error_y={"visible": False},
            hovertemplate="%{x}<br>" + label + ": %{y:,.0f} (interval unknown)<extra></extra>",
            showlegend=False,
        )
    lo, hi = [], []
    for r, v in zip(rows, values, strict=True):
        band = _band(r)
        assert band is not None
        scale = v / r["output_tok_s_per_chip"] if r["output_tok_s_per_chip"] else 0.0
        lo.append(max(v - band["lo"] * scale, 0.0))
        hi.append(max(band["hi"] * scale - v, 0.0))
    return go.Bar(
        x=names,
        y=values,
        name=label,
        marker_color=[colours[n] for n in names],
        error_y={"type": "data", "array": hi, "arrayminus": lo, "visible": True},
        hovertemplate="%{x}<br>" + label + ": %{y:,.0f}<extra></extra>",
        showlegend=False,
    )


def tradeoff_figure(compare: dict[str, Any]) -> go.Figure:
    """Throughput per chip against tokens/s per user, one curve per system, its operating point marked."""
    fig = go.Figure()
    systems = [r for r in compare["systems"] if r.get("curve")]
    colours = _colour([r["system"] for r in systems])
    for r in systems:
        users, chips = zip(*sorted(r["curve"]), strict=True)
        name = r["system"] + (" (co-located)" if r["mode"] == "aggregated" else "")
        fig.add_trace(
            go.Scatter(
                x=users,
                y=chips,
                mode="lines+markers",
                name=name,
                legendgroup=r["system"],
                line={"color": colours[r["system"]]},
                hovertemplate=name + "<br>%{x:.1f} tok/s/user<br>%{y:,.0f} tok/s/chip<extra></extra>",
            )
        )
        if r["feasible"]:
            fig.add_trace(
                go.Scatter(
                    x=[1e3 / r["tpot_ms"]],
                    y=[r["decode_tok_s_per_chip"]],
                    mode="markers",
                    name=f"{r['system']} at the SLO",
                    legendgroup=r["system"],
                    showlegend=False,
                    marker={"size": 13, "color": colours[r["system"]], "line": {"color": "black", "width": 1.5}},
                    hovertemplate=f"{r['system']} operating point<br>batch {r['batch_per_chip']:g}/chip"
                    "<br>%{x:.1f} tok/s/user<br>%{y:,.0f} tok/s/chip<extra></extra>",
                )
            )
    fig.add_vline(x=1e3 / compare["tpot_slo_ms"], line_dash="dash", line_color="grey")
    fig.update_xaxes(title="tokens/s per user (1 / TPOT)")
    fig.update_yaxes(title="decode tokens/s per chip", type="log")
    return _layout(fig, "Throughput against interactivity (decode instances; co-located systems per chip)", 560)


def breakdown_figure(breakdown: dict[str, Any]) -> go.Figure:
    """Each operating point's step by operator (stacked, ms) with its roofline lower bound as a diamond (the
    busiest resource's work at speed of light where microbatches overlap: docs/model.md §6)."""
    systems = list(breakdown)
    ops: list[str] = []
    for b in breakdown.values():
        ops += [op for op in b["ops_us"] if op not in ops]
    colours = _colour(ops)
    fig = go.Figure()
    for op in ops:
        fig.add_trace(
            go.Bar(
                y=systems,
                x=[breakdown[s]["ops_us"].get(op, 0.0) / 1e3 for s in systems],
                name=op,
                orientation="h",
                marker_color=colours[op],
                hovertemplate="%{y}<br>" + op + ": %{x:.2f} ms<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            y=systems,
            x=[breakdown[s]["roofline_step_ms"] for s in systems],
            mode="markers",
            name="roofline lower bound",
            marker={"symbol": "diamond", "size": 11, "color": "black"},
            hovertemplate="%{y}<br>roofline lower bound %{x:.2f} ms<extra></extra>",
        )
    )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="ms per step (operating point of each system)")
    return _layout(fig, "Where the step time goes, against the roofline", 140 + 42 * len(systems))


def _parity(fig: go.Figure, xs: list[float], row: int | None = None, col: int | None = None) -> None:
    """The y = x line and the ±25 % band over the panel's range."""
    lo, hi = min(xs), max(xs)
    for scale, dash in ((1.0, "solid"), (1 + BAND, "dot"), (1 - BAND, "dot")):
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo * scale, hi * scale],
                mode="lines",
                line={"color": "grey", "dash": dash, "width": 1},
                hoverinfo="skip",
                showlegend=False,
            ),
            row=row,
            col=col,
        )


def reproduce_figure(rep: dict[str, Any]) -> go.Figure:
    rows = [r for r in rep["rows"] if r["published"] > 0 and r["predicted"] > 0]
    fig = go.Figure()
    for role, symbol in (("predicted", "circle"), ("fitted", "circle-open")):
        mine = [r for r in rows if r["role"] == role]
        fig.add_trace(
            go.Scatter(
                x=[r["published"] for r in mine],
                y=[r["predicted"] for r in mine],
                mode="markers",
                name=f"{role} rows",
                marker={"symbol": symbol, "size": 9},
                text=[f"{r['id']} ({r['unit']}): {r['error_pct']:+.1f} %" for r in mine],
                hovertemplate="%{text}<br>published %{x:,.4g}<br>predicted %{y:,.4g}<extra></extra>",
            )
        )
    _parity(fig, [r["published"] for r in rows] + [r["predicted"] for r in rows])
    fig.update_xaxes(title="published", type="log")
    fig.update_yaxes(title="predicted", type="log")
    return _layout(fig, rep["title"], 560)


def parity_figure(entries: list[dict[str, Any]]) -> go.Figure:
    """Predicted against measured, one panel per metric, one colour per system (hollow: fitted rows)."""
    ok = [e for e in entries if e["status"] == "ok" and e["predicted"] and e["measured"] > 0]
    metrics = [(m, t) for m, t in PARITY_METRICS if any(e["metric"] == m for e in ok)] or list(PARITY_METRICS[:1])
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[t for _, t in metrics])
    systems = sorted({e["system"] for e in ok})
    colours = _colour(systems)
    for col, (metric, _) in enumerate(metrics, start=1):
        mine = [e for e in ok if e["metric"] == metric]
        for system in systems:
            for role, symbol in (("predicted", "circle"), ("fitted", "circle-open")):
                pts = [e for e in mine if e["system"] == system and e["role"] == role]
                if not pts:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=[e["measured"] for e in pts],
                        y=[e["predicted"] for e in pts],
                        mode="markers",
                        name=system,
                        legendgroup=system,
                        showlegend=col == 1 and role == "predicted",
                        marker={"symbol": symbol, "size": 7, "color": colours[system]},
                        text=[f"{e['id']} ({e['stack']}, {role}): {e['error_pct']:+.1f} %" for e in pts],
                        hovertemplate="%{text}<br>measured %{x:,.4g}<br>predicted %{y:,.4g}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        if mine:
            _parity(fig, [e["measured"] for e in mine] + [e["predicted"] for e in mine], 1, col)
        fig.update_xaxes(type="log", title="measured", row=1, col=col)
        fig.update_yaxes(type="log", title="predicted" if col == 1 else None, row=1, col=col)
    n = len(ok)
    return _layout(fig, f"Validation parity: {n} answered metrics (filled: predicted rows; ±25 % dotted)", 520)
