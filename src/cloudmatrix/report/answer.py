"""The report's answer, shown first: the verdict of the reference pair as a table of ratios with intervals
and winners, and the sweep as three plotly heat maps (ratio A / B per system, per chip and per kW over input
length and TPOT SLO) with the break-even contour and the cells not drawn (beyond context, infeasible)."""

from __future__ import annotations

import html
import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cloudmatrix.studies.sweep import grid, length_label, log2_limit, marks
from cloudmatrix.studies.verdict import sentence


def verdict_html(v: dict[str, Any] | None, table: Any) -> str:
    """The verdict as a sentence per figure and a sortable table (``table`` is html.table)."""
    if v is None:
        return "<p>No verdict: the reference pair is not among the systems compared.</p>"
    a, b = html.escape(v["a"]), html.escape(v["b"])
    if v["infeasible"]:
        why = "; ".join(f"{html.escape(s)}: {html.escape(r)}" for s, r in v["infeasible"].items())
        return f"<p>No verdict for {a} against {b}: infeasible under these conditions ({why}).</p>"
    rows = []
    for r in v["ratios"]:
        interval = "unknown" if r["lo"] is None else f"{r['lo']:.2f}–{r['hi']:.2f}"
        shown = [_number(x, r["higher_is_better"]) for x in (r["a"], r["b"])]
        rows.append([r["label"], *shown, r["ratio"], interval, sentence(r, v["a"], v["b"])])
    note = (
        f"<p class='note'>A = {a}, B = {b}. Output tok/s per chip, per system, per kW and per $M of capital "
        "(higher is better) and $ per million output tokens (lower is better). Interval: "
        f"{html.escape(v['interval_rule'])}; unknown where a side has no validation data.</p>"
    )
    headers = ("figure", "A", "B", "A / B", "interval", "verdict")
    return note + str(table(headers, rows, ("", "", "", ".2f", "", "")))


def _number(x: float | None, throughput: bool) -> str:
    if x is None:
        return "?"
    return f"{x:,.0f}" if throughput else f"{x:,.3f}"


def sweep_figure(d: dict[str, Any]) -> go.Figure:
    """Three heat maps of log2(A / B) on one diverging scale, the ratio in each cell's hover and text."""
    titles = [p["title"] for p in d["panels"]]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.06)
    limit = log2_limit(d)
    xs = [length_label(n) for n in d["input_lens"]]
    ys = [f"{t:g} ms" for t in d["tpot_slos_ms"]]
    mark = marks(d)
    for i, panel in enumerate(d["panels"]):
        ratios = grid(d, panel["key"])
        z = [[math.log2(r) if r else None for r in row] for row in ratios]
        text = [[f"{r:.2f}" if r else m for r, m in zip(row, mrow, strict=True)]
                for row, mrow in zip(ratios, mark, strict=True)]  # fmt: skip
        fig.add_trace(
            go.Heatmap(x=xs, y=ys, z=z, text=text, texttemplate="%{text}", colorscale="RdBu", zmin=-limit,
                       zmax=limit, showscale=i == 2, hoverongaps=False,
                       colorbar={"title": "log2 A/B", "tickvals": list(range(-math.ceil(limit), math.ceil(limit) + 1))},
                       hovertemplate="input %{x}, TPOT SLO %{y}: A / B = %{text}<extra></extra>"),
            row=1, col=i + 1,
        )  # fmt: skip
        drawn = [v for row in z for v in row if v is not None]
        if drawn and min(drawn) < 0 < max(drawn):
            fig.add_trace(
                go.Contour(x=xs, y=ys, z=z, contours={"start": 0, "end": 0, "size": 1, "coloring": "none"},
                           line={"color": "black", "width": 3}, showscale=False, hoverinfo="skip",
                           name="break-even"),
                row=1, col=i + 1,
            )  # fmt: skip
        fig.update_xaxes(title_text="input length", row=1, col=i + 1)
    fig.update_yaxes(title_text="TPOT SLO", row=1, col=1)
    ttft = "no TTFT SLO" if d["ttft_slo_ms"] is None else f"TTFT SLO {d['ttft_slo_ms']:g} ms"
    fig.update_layout(
        template="plotly_white",
        height=460,
        margin={"l": 70, "r": 20, "t": 90, "b": 50},
        title=f"A = {d['a']} / B = {d['b']}: {d['model']}, output {d['output_len']:,} tokens, {ttft}",
        plot_bgcolor="#d9d9d9",
    )
    return fig


def sweep_note(d: dict[str, Any]) -> str:
    return (
        "<p class='note'>Blue: A ahead, red: B ahead; the black line is break-even (A / B = 1) where the grid "
        "crosses it. Grey cells are not drawn: ctx = prompt + output beyond the model's context, x A / x B = no "
        "deployment of that side meets the TPOT SLO. Each cell is priced as <code>compare</code> prices it.</p>"
    )
