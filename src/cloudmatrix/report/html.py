"""One self-contained HTML page from the report's data: plotly's JavaScript inlined once, each figure a div,
tables sortable by a click on their header, the data itself embedded as JSON (``#report-data``) so a reader
or a test can check every figure against the commands' ``--json``. Nothing is fetched when it is opened."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from cloudmatrix.inputs import finite_json
from cloudmatrix.report import answer, figures
from cloudmatrix.report.fault_section import fault_section

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #b3001b; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
header { padding: 18px 4vw 8px; border-bottom: 3px solid var(--accent); }
header h1 { margin: 0 0 4px; font-size: 1.6em; }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; }
nav a { color: var(--accent); text-decoration: none; white-space: nowrap; }
main { padding: 0 4vw 40px; max-width: 1400px; }
section { margin-top: 28px; }
h2 { font-size: 1.25em; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
p.note { color: var(--muted); margin: 4px 0 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 150px; flex: 1 1 150px; }
.card b { display: block; font-size: 1.35em; }
.card span { color: var(--muted); font-size: 0.9em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
th { cursor: pointer; background: #f4f6f9; position: sticky; top: 0; user-select: none; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
.figure { width: 100%; min-height: 320px; }
@media (max-width: 700px) { body { font-size: 14px; } main, header { padding-left: 3vw; padding-right: 3vw; } }
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = !th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _cell(value: Any, spec: str = ",.1f") -> str:
    if value is None:
        return '<td data-v="">–</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td data-v="{value}">{format(value, spec)}</td>'
    text = html.escape(str(value))
    return f'<td class="text" data-v="{text}">{text}</td>'


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], specs: Sequence[str] | None = None) -> str:
    """A sortable table; numbers keep their raw value for sorting and show with their format spec."""
    specs = specs or [",.1f"] * len(headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v, s) for v, s in zip(r, specs, strict=True)) + "</tr>" for r in rows)
    return (
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def figure(fig: go.Figure, div_id: str) -> str:
    inner = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"responsive": True, "displaylogo": False},
        default_height=f"{fig.layout.height or 480}px",
    )
    return f'<div class="figure">{inner}</div>'


def _glance(d: dict[str, Any]) -> str:
    f = d["focus"]
    cards = [
        (f"{f['chips']:,} NPUs", f"{f['dies']:,} dies, {f['cpus']} Kunpeng CPUs"),
        (f"{f['bf16_pflops']:,.0f} PF", "BF16 dense"),
        (f"{f['int8_pflops']:,.0f} POPS", "INT8 dense"),
        (f"{f['hbm_tb']:,.1f} TB", f"HBM at {f['hbm_bw_tb_s']:,.0f} TB/s"),
        (f"{f['scale_up_tb_s']:,.0f} TB/s", "Unified Bus, per direction"),
        (f"{f['power_kw']:,.0f} kW", "system power"),
    ]
    html_cards = "".join(f'<div class="card"><b>{a}</b><span>{b}</span></div>' for a, b in cards)
    cols = ("id", "chip", "chips", "dies", "bf16_pflops", "int8_pflops", "hbm_tb", "hbm_bw_tb_s", "power_kw")
    headers = ("system", "chip", "chips", "dies", "BF16 PF", "INT8 PF", "HBM TB", "HBM TB/s", "kW")
    specs = ("", "", ",d", ",d", ",.1f", ",.1f", ",.1f", ",.0f", ",.0f")
    rows = [[r[c] for c in cols] for r in d["rows"]]
    return (
        f'<div class="cards">{html_cards}</div>'
        + "<p class='note'>Every system in the catalog, derived from its sources:</p>"
        + table(headers, rows, specs)
    )


def _compare_table(c: dict[str, Any]) -> str:
    headers = ("system", "mode", "precision", "stack", "batch/chip", "TPOT ms", "TTFT ms", "out tok/s/chip",
               "out tok/s/system", "per kW", "per $M", "$/Mtok", "J/token")  # fmt: skip
    specs = ("", "", "", "", ",.0f", ".1f", ",.0f", ",.0f", ",.0f", ",.0f", ",.0f", ".3f", ".2f")
    rows = []
    for r in c["systems"]:
        if not r["feasible"]:
            mark = "not run" if r.get("not_run") else "infeasible"
            rows.append([r["system"], mark, r["precision"], r.get("stack"), *[None] * 9])
            continue
        keys = ("batch_per_chip", "tpot_ms", "ttft_ms", "output_tok_s_per_chip", "output_tok_s_per_system",
                "output_tok_s_per_kw", "output_tok_s_per_musd")  # fmt: skip
        econ = r.get("economics") or {}
        rows.append([r["system"], r["mode"], r["precision"], r.get("stack"), *(r[k] for k in keys),
                     econ.get("usd_per_mtok"), econ.get("j_per_token")])  # fmt: skip
    return table(headers, rows, specs)


def _reproduce_table(rep: dict[str, Any]) -> str:
    headers = ("row", "quantity", "role", "published", "predicted", "error %", "tolerance %")
    specs = ("", "", "", ",.4g", ",.4g", "+.1f", ".0f")
    rows = [[r["id"], r["unit"], r["role"], r["published"], r["predicted"], r["error_pct"], r["tolerance_pct"]]
            for r in rep["rows"]]  # fmt: skip
    return table(headers, rows, specs)


def _error_table(cells: list[dict[str, Any]]) -> str:
    headers = ("role", "system x stack", "metric", "rows", "median |err| %", "p90 |err| %", "bias %", "within 25 %")
    specs = ("", "", "", ",d", ".1f", ".1f", "+.1f", ".0f")
    rows = [[c["role"], c["key"], c["metric"], c["rows"], c["median_abs_error_pct"], c["p90_abs_error_pct"],
             c["bias_pct"], c["within_25_pct"]] for c in cells]  # fmt: skip
    return table(headers, rows, specs)


def _plan(p: dict[str, Any]) -> str:
    if not p["ranked"]:
        return f"<p>No deployment meets the SLOs: {html.escape(p['why_empty'])}</p>"
    best = p["ranked"][0]
    pre, dec = best["prefill"], best["decode"]
    text = (
        f"Best of {p['search']['enumerated']:,} deployments on {p['chips']} {p['system']} chips: "
        f"{pre['instances']} prefill instance(s) of {pre['chips']} chips (EP{pre['ep']}) and "
        f"{dec['instances']} decode instance(s) of {dec['chips']} chips (EP{dec['ep']}, batch "
        f"{dec['batch_per_chip']}/chip, MTP {dec['mtp']}), {best['precision'].upper()}: "
        f"{best['output_tok_s_per_chip']:,.0f} output tok/s per chip at TPOT {best['tpot_ms']:.1f} ms, "
        f"TTFT {best['ttft_ms']:,.0f} ms."
    )
    e = best.get("economics") or {}
    if e.get("usd_per_mtok") is not None:
        text += f" ${e['usd_per_mtok']:.3f} per million output tokens (TCO), {e['j_per_token']:.2f} J/token."
    headers = ("rank", "chips", "rate req/s", "TPOT ms", "TTFT ms", "tok/s/user", "out tok/s/chip")
    specs = (",d", ",d", ",.1f", ".1f", ",.0f", ".1f", ",.1f")
    rows = [[r["rank"], r["chips"], r["rate_req_s"], r["tpot_ms"], r["ttft_ms"], r["tok_s_per_user"],
             r["output_tok_s_per_chip"]] for r in p["ranked"]]  # fmt: skip
    versus = p.get("versus_compare")  # the plan beside compare's preset, in one line (planner/versus.py)
    line = f"<p>{html.escape(versus['line'])}</p>" if versus else ""
    return f"<p>{html.escape(text)}</p>" + line + table(headers, rows, specs)


def render(data: dict[str, Any], title: str) -> tuple[str, list[str]]:
    """The page and the ids of its sections."""
    c, v = data["compare"], data["validation"]
    guard = ""
    if v["guard"]:
        medians = v["guard"]["predicted"]
        guard = (
            "The CI subset, re-run by every test run, is held to predicted-row medians of "
            + ", ".join(f"{m} {x['median_abs_error_pct']:.1f} %" for m, x in medians.items())
            + "."
        )
    sections = [
        ("verdict", "The verdict", answer.verdict_html(c.get("verdict"), table)),
        (
            "sweep",
            "Where each wins",
            answer.sweep_note(data["sweep"]) + figure(answer.sweep_figure(data["sweep"]), "fig-sweep"),
        ),
        (
            "compare",
            "Systems side by side",
            "<p class='note'>Each system's published (or flagged assumed) deployment under the same SLO; error bars "
            "are the 80 % intervals of output tok/s per chip from validate's out-of-group errors; a hollow bar "
            "without one: the interval is unknown.</p>"
            + figure(figures.compare_figure(c), "fig-compare")
            + _compare_table(c),
        ),
        ("tradeoff", "Throughput against interactivity", figure(figures.tradeoff_figure(c), "fig-tradeoff")),
        *([("plan", "The planner's best deployment", _plan(data["plan"]))] if "plan" in data else []),
        ("breakdown", "Step breakdown", figure(figures.breakdown_figure(data["breakdown"]), "fig-breakdown")),
        (
            "reproduce",
            "Reproducing the CloudMatrix384 paper",
            f"<p class='note'>Median |error| {data['reproduce']['median_abs_error_pct']:.2f} %, predicted rows "
            f"{data['reproduce']['predicted_median_abs_error_pct']:.2f} %.</p>"
            + figure(figures.reproduce_figure(data["reproduce"]), "fig-reproduce")
            + _reproduce_table(data["reproduce"]),
        ),
        (
            "validation",
            "Validation against independent measurements",
            f"<p class='note'>From {html.escape(v['source'])}. {html.escape(guard)}</p>"
            + figure(figures.parity_figure(v["entries"]), "fig-parity")
            + _error_table(v["cells"]),
        ),
        *([fault_section(data["faults"], table, figure)] if "faults" in data else []),
        ("glance", "The catalog: CloudMatrix384 at a glance", _glance(data["glance"])),
    ]
    nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(t)}</h2>{content}</section>' for sid, t, content in sections)
    payload = json.dumps(finite_json(data), allow_nan=False).replace("</", "<\\/")
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{html.escape(title)}</h1><nav>{nav}</nav></header><main>{body}</main>"
        f'<script type="application/json" id="report-data">{payload}</script>'
        f"<script>{SORT_JS}</script></body></html>"
    )
    return page, [sid for sid, _, _ in sections]
