"""The live page of `serve` (``/dashboard``, and ``/`` redirects to it): the system, deployment and stack it
emulates; running, queued and outstanding requests apart; KV occupancy, TTFT and TPOT percentiles over the
last minute and tokens/s, each with a small chart of its last minute (axis, scale, time), polled once a second from
``/v1/cloudmatrix/stats``, which reads the same observations as /metrics. One inline page: no network; its
names escaped, its script and style allowed by hash in a Content-Security-Policy that allows nothing else."""

from __future__ import annotations

import base64
import hashlib
import html
from string import Template
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse

from cloudmatrix.emulator.engine import RealtimeEngine
from cloudmatrix.emulator.metrics import Metrics

CARDS = (  # element id, label, unit
    ("tokens_per_s", "tokens/s while streaming (last minute)", ""),
    ("running", "running (prefill, KV transfer, decode)", ""),
    ("queue_depth", "queued (prefill or decode admission)", ""),
    ("outstanding", "outstanding (running + queued)", ""),
    ("kv_occupancy", "KV occupancy", "%"),
    ("ttft_p50", "TTFT p50", "ms"),
    ("ttft_p99", "TTFT p99", "ms"),
    ("tpot_p50", "TPOT p50", "ms"),
    ("tpot_p99", "TPOT p99", "ms"),
)

STYLE = """
body { margin: 0; font: 15px/1.4 system-ui, sans-serif; color: #1d2330; }
header { padding: 14px 4vw; border-bottom: 3px solid #b3001b; }
h1 { margin: 0; font-size: 1.4em; } p { color: #5b6475; margin: 4px 0 0; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; padding: 16px 4vw; }
.card { border: 1px solid #d9dee7; border-radius: 6px; padding: 10px 14px; }
.card b { display: block; font-size: 1.6em; } .card span { color: #5b6475; }
svg { width: 100%; height: auto; display: block; margin-top: 6px; }
polyline { fill: none; stroke: #b3001b; stroke-width: 1.5; } polygon { fill: #b3001b; fill-opacity: 0.12; }
line { stroke: #d9dee7; stroke-width: 0.6; } text { font-size: 7px; fill: #5b6475; }
"""

SCRIPT = """
var series = {};
var X0 = 34, X1 = 200, Y0 = 52, Y1 = 4;
function nice(max) {  // the chart's top: 1, 2 or 5 times a power of ten at or above the largest value
  if (!(max > 0)) { return 1; }
  var p = Math.pow(10, Math.floor(Math.log10(max))), steps = [1, 2, 5, 10];
  for (var i = 0; i < steps.length; i++) { if (steps[i] * p >= max) { return steps[i] * p; } }
  return 10 * p;
}
function label(v, unit) {
  var t = v >= 1000 ? (v / 1000).toLocaleString() + 'k' : String(+v.toPrecision(3));
  return unit === '%' ? String(Math.round(100 * v)) + '%' : t;
}
function draw(id, value, unit) {  // the last 60 polls, oldest at the left; a missing value leaves a gap at 0
  var h = series[id] = (series[id] || []).concat([value === null || value === undefined ? 0 : value]).slice(-60);
  var top = unit === '%' ? 1 : nice(Math.max.apply(null, h));
  var pts = h.map(function (v, i) {
    var x = X1 - (h.length - 1 - i) * (X1 - X0) / 59;
    return x.toFixed(1) + ',' + (Y0 - (Y0 - Y1) * Math.min(v / top, 1)).toFixed(1);
  });
  document.getElementById(id + '_line').setAttribute('points', pts.join(' '));
  var area = pts[0].split(',')[0] + ',' + Y0 + ' ' + pts.join(' ') + ' ' + X1 + ',' + Y0;
  document.getElementById(id + '_area').setAttribute('points', area);
  document.getElementById(id + '_top').textContent = label(top, unit);
}
function show(id, value, unit) {
  var text = value === null || value === undefined ? '–' : (unit === '%' ? (100 * value).toFixed(1) :
    (Math.abs(value) >= 100 || Number.isInteger(value) ? Math.round(value).toLocaleString() : value.toFixed(1)));
  document.getElementById(id).textContent = text + (unit && text !== '–' ? ' ' + unit : '');
  draw(id, value, unit);
}
function status(text) { document.getElementById('status').textContent = text; }
function tick() {
  fetch('/v1/cloudmatrix/stats', {credentials: 'same-origin'}).then(function (r) {
    if (r.status === 401) { throw new Error('not signed in: open /dashboard?key=KEY again'); }
    return r.json();
  }).then(function (s) {
    show('tokens_per_s', s.tokens_per_s, ''); show('running', s.running, '');
    show('queue_depth', s.queue_depth, ''); show('outstanding', s.outstanding, '');
    show('kv_occupancy', s.kv_occupancy, '%');
    show('ttft_p50', s.ttft_ms.p50, 'ms'); show('ttft_p99', s.ttft_ms.p99, 'ms');
    show('tpot_p50', s.tpot_ms.p50, 'ms'); show('tpot_p99', s.tpot_ms.p99, 'ms');
    status(s.outstanding + ' requests in flight, ' + s.completed.toLocaleString() + ' completed, simulated time ' +
      s.sim_time_s.toFixed(1) + ' s (speed ' + s.speed + ')');
  }).catch(function (e) { status(e.message.indexOf('not signed in') === 0 ? e.message : 'server unreachable'); });
}
tick(); setInterval(tick, 1000);
"""

# Every string that comes from the user's scenario goes in through html.escape; the figures arrive as JSON
# and are written with textContent. Substitution is one pass, so a name cannot smuggle in a placeholder.
PAGE = Template("""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>cloudmatrix serve: $model</title>
<link rel="icon" href="data:,">
<style>$style</style></head><body>
<header><h1>cloudmatrix serve: $model</h1><p>scenario $scenario · system $system · stack $stack</p>
<p>deployment: $deployment</p>
<p id="status">connecting…</p></header>
<main>$cards</main>
<script>$script</script></body></html>""")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page may run its one script and style (by hash), fetch from its own server, and nothing else.
CSP = (
    f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


CHART = (  # a small chart: frame, scale (top and 0), time axis (60 polls), area and line
    '<svg viewBox="0 0 200 62" role="img" aria-label="{label}, last minute">'
    '<line x1="34" y1="4" x2="200" y2="4"/><line x1="34" y1="52" x2="200" y2="52"/>'
    '<line x1="34" y1="4" x2="34" y2="52"/>'
    '<text id="{cid}_top" x="31" y="7" text-anchor="end">1</text><text x="31" y="54" text-anchor="end">0</text>'
    '<text x="34" y="61">60 s ago</text><text x="200" y="61" text-anchor="end">now</text>'
    '<polygon id="{cid}_area" points=""/><polyline id="{cid}_line" points=""/></svg>'
)


def page(model: str, scenario: str, system: str, stack: str, deployment: str = "") -> str:
    cards = "".join(
        f'<div class="card"><span>{label}</span><b id="{cid}">–</b>{CHART.format(cid=cid, label=label)}</div>'
        for cid, label, _ in CARDS
    )
    names = {"model": model, "scenario": scenario, "system": system, "stack": stack, "deployment": deployment}
    return PAGE.substitute(
        {key: html.escape(value) for key, value in names.items()}, cards=cards, style=STYLE, script=SCRIPT
    )


def deployment_text(engine: RealtimeEngine) -> str:
    """The emulated pools in a line: instances × chips (EP, MTP) per role, and the chip."""
    sc, parts = engine.sim.s, []
    for role, pool in (("prefill", sc.prefill), ("decode", sc.decode)):
        if pool is not None:
            extra = [f"EP{pool.ep}"] if pool.ep else []
            mtp = getattr(pool, "mtp", 0)  # decode pools only
            extra += [f"MTP {mtp}"] if mtp else []
            more = f" ({', '.join(extra)})" if extra else ""
            parts.append(f"{role} {pool.instances} × {pool.chips} chips{more}")
    return f"{' + '.join(parts)} of {engine.sim.costs.hw.chip.id}"


def stats(engine: RealtimeEngine, metrics: Metrics) -> dict[str, Any]:
    """The dashboard's figures: the live engine state and the last minute of /metrics' observations."""
    return {
        "outstanding": engine.outstanding,
        "running": engine.running(),
        "queue_depth": engine.queue_depth(),
        "kv_occupancy": engine.kv_occupancy(),
        "prefix_cache_hit_ratio": engine.cache_hit_rate(),
        "completed": engine.completed,
        "sim_time_s": engine.sim.env.now,
        "speed": engine.speed,
        **metrics.window.snapshot(),
    }


def add_dashboard(app: FastAPI, engine: RealtimeEngine, metrics: Metrics, model: str) -> None:
    sc = engine.sim.s
    text = page(model, sc.name, sc.system, engine.sim.costs.stack or "", deployment_text(engine))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard")
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(text, headers={"content-security-policy": CSP, "cache-control": "no-store"})

    @app.get("/v1/cloudmatrix/stats")
    async def live_stats() -> dict[str, Any]:
        return stats(engine, metrics)
