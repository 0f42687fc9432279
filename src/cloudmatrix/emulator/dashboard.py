"""The live page of `serve` (``/dashboard``, and ``/`` redirects to it): queue depth, running requests, KV
occupancy, TTFT and TPOT percentiles over the last minute and tokens/s, polled once a second from
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
    ("tokens_per_s", "tokens/s (last minute)", ""),
    ("running", "running requests", ""),
    ("queue_depth", "queued requests", ""),
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
main { display: flex; flex-wrap: wrap; gap: 12px; padding: 16px 4vw; }
.card { border: 1px solid #d9dee7; border-radius: 6px; padding: 10px 14px; flex: 1 1 200px; }
.card b { display: block; font-size: 1.6em; } .card span { color: #5b6475; }
svg { width: 100%; height: 48px; } polyline { fill: none; stroke: #b3001b; stroke-width: 2; }
"""

SCRIPT = """
var series = {};
function draw(id, value) {
  var h = series[id] = (series[id] || []).concat([value === null ? 0 : value]).slice(-60);
  var max = Math.max.apply(null, h.concat([1e-9]));
  var pts = h.map(function (v, i) { return (i * 100 / 59).toFixed(1) + ',' + (46 - 44 * v / max).toFixed(1); });
  document.getElementById(id + '_line').setAttribute('points', pts.join(' '));
}
function show(id, value, unit) {
  var text = value === null || value === undefined ? '–' : (unit === '%' ? (100 * value).toFixed(1) :
    (Math.abs(value) >= 100 ? Math.round(value).toLocaleString() : value.toFixed(1)));
  document.getElementById(id).textContent = text + (unit && text !== '–' ? ' ' + unit : '');
  draw(id, value);
}
function status(text) { document.getElementById('status').textContent = text; }
function tick() {
  fetch('/v1/cloudmatrix/stats', {credentials: 'same-origin'}).then(function (r) {
    if (r.status === 401) { throw new Error('not signed in: open /dashboard?key=KEY again'); }
    return r.json();
  }).then(function (s) {
    show('tokens_per_s', s.tokens_per_s, ''); show('running', s.running, '');
    show('queue_depth', s.queue_depth, ''); show('kv_occupancy', s.kv_occupancy, '%');
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


def page(model: str, scenario: str, system: str, stack: str) -> str:
    cards = "".join(
        f'<div class="card"><span>{label}</span><b id="{cid}">–</b>'
        f'<svg viewBox="0 0 100 48" preserveAspectRatio="none"><polyline id="{cid}_line" points=""/></svg></div>'
        for cid, label, _ in CARDS
    )
    names = {"model": model, "scenario": scenario, "system": system, "stack": stack}
    return PAGE.substitute(
        {key: html.escape(value) for key, value in names.items()}, cards=cards, style=STYLE, script=SCRIPT
    )


def stats(engine: RealtimeEngine, metrics: Metrics) -> dict[str, Any]:
    """The dashboard's figures: the live engine state and the last minute of /metrics' observations."""
    running = sum(int(b.active.sum()) for b in engine.sim.decodes)
    return {
        "outstanding": engine.outstanding,
        "running": running,
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
    text = page(model, sc.name, sc.system, engine.sim.costs.stack or "")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard")
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(text, headers={"content-security-policy": CSP, "cache-control": "no-store"})

    @app.get("/v1/cloudmatrix/stats")
    async def live_stats() -> dict[str, Any]:
        return stats(engine, metrics)
