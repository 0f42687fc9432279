"""Reduces the published GEMM microbenchmarks (catalog/data/kernels/microbench.yaml) to the kernel curves
the cost model interpolates (curves.yaml): at each measured M, the median over shapes and tables of the
achieved share of the format's peak, ``FLOPs / (time x peak)`` on the chip the table was measured on.

Rows dominated by a fixed per-kernel floor are left out, since host overheads and graph capture change it in
serving (the stack's step overhead carries it): dense rows within 30 % of their shape's fastest time, and
whole-MoE-layer rows with fewer than one token per expert. In W4A16 tables (weights stored narrower than the
compute format) so are the rows within 30 % of the fastest layer that reads every expert's weights: that
plateau is the weight read, which the roofline's memory term prices; taken as compute it slowed gpt-oss
decode by the serving factor fitted on compute-bound rows. The FP8/FP4 grouped tables keep their plateau
rows: left out there, the predicted rows' median throughput error rose from 9 to 24 %.

A grouped curve's decode-shaped tables end at 512 rows per expert; where it names prefill-shaped tables, it
goes on beyond: its ``levels`` are the median share at that last M of every table of the kernel (decode- and
prefill-shaped) per experts held on the die, its ``growth`` the growth tables' median share at each larger M
relative to their own share at the last M.

A fused attention table (``op: attention``) is one call per row over a growing sequence, and two things in
such a benchmark are not the kernel's rate at a serving shape (128 heads of several prompts in one call):
its fastest row is the call's fixed cost (host dispatch, which the twin prices as the op's launch), so each
row is taken net of it and rows within twice it are left out; and one head of S0 rows is few query tiles
(``ATTENTION_QUERY_TILE`` rows each, one per cube core at a time), so the last wave of tiles leaves cores
idle, and the share is of the cores the call keeps busy. A row's share: ``4 x heads x S0 x S1 x head_dim``
FLOPs over (time - fixed cost) x peak x busy share, against S1, the keys each query row runs over. A table
given in the benchmark's own TFLOPS (FlashAttention-3's: batch x heads sized to 16K tokens, which fill a
GPU, and a causal table counting half the square, as the twin counts a causal prompt) is that rate over the
peak, with nothing netted."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from cloudmatrix.catalog.hardware import load_chip
from cloudmatrix.catalog.kernels import BenchTable, curves, microbench

FLOOR_RATIO = 1.3  # dense rows faster than this x their shape's fastest are floor-bound
ATTENTION_FLOOR_RATIO = 2.0  # attention rows within this x the call's fixed cost are left out
# Query rows a fused attention kernel gives one cube core at a time: assumed, as the A2/A3 flash-attention
# kernel of the same benchmark's repository tiles them (pto-isa kernels/manual/common/flash_atten: CUBE_S0
# 128, split over (batch, heads, S0 / CUBE_S0)); torch_npu's own tiling is not published.
ATTENTION_QUERY_TILE = 128


def _attention_shares(table: BenchTable, peak: float, cores: int) -> list[tuple[float, float]]:
    """(S1, share of peak net of the call's fixed cost, of the cores it keeps busy) of an attention
    table's rows (module docstring)."""
    if all(r.tflops is not None for r in table.rows):  # a GPU benchmark's own rate: its batch fills the chip
        return [(float(r.n), r.tflops * 1e12 / peak) for r in table.rows if r.n is not None and r.tflops]
    timed = []
    for r in table.rows:
        assert r.m is not None and r.n is not None and r.k is not None and r.latency_us is not None, table.id
        tiles = r.groups * math.ceil(r.m / ATTENTION_QUERY_TILE)
        busy = tiles / (math.ceil(tiles / cores) * cores)
        timed.append((float(r.n), 4.0 * r.groups * r.m * r.n * r.k, r.latency_us * 1e-6, busy))
    fixed = min(secs for _, _, secs, _ in timed)
    return [
        (n, flops / ((secs - fixed) * peak * busy))
        for n, flops, secs, busy in timed
        if secs >= ATTENTION_FLOOR_RATIO * fixed
    ]


def _shares(table: BenchTable) -> list[tuple[float, float]]:
    """(M, achieved share of peak) of the rows the curve uses."""
    chip = load_chip(table.measured_on or table.chips[0])
    peak = chip.die.peak_flops(table.format)
    if table.op == "attention":
        return _attention_shares(table, peak, int(chip.die.compute_units.value))
    out = []
    if table.moe_shape is not None:
        s = table.moe_shape
        layers = []
        for r in table.rows:
            assert r.tokens is not None and r.local_experts is not None and r.latency_us is not None
            per_expert = r.tokens * s.top_k / s.experts
            if per_expert >= 1.0:
                flops = 2.0 * per_expert * r.local_experts * 3 * s.hidden * s.intermediate / table.moe_tp
                layers.append((per_expert, flops, r.latency_us * 1e-6))
        floor = min((secs for _, _, secs in layers), default=0.0) if table.weights else 0.0
        return [(m, flops / (secs * peak)) for m, flops, secs in layers if secs >= FLOOR_RATIO * floor]
    fastest: dict[tuple[int | None, int | None, int], float] = defaultdict(lambda: float("inf"))
    timed = []
    for r in table.rows:
        assert r.m is not None and r.n is not None and r.k is not None
        flops = 2.0 * r.groups * r.m * r.n * r.k
        secs = r.latency_us * 1e-6 if r.latency_us else flops / (r.tflops * 1e12)  # type: ignore[operator]
        fastest[(r.n, r.k, r.groups)] = min(fastest[(r.n, r.k, r.groups)], secs)
        timed.append((r, flops, secs))
    for r, flops, secs in timed:
        if r.latency_us and secs < FLOOR_RATIO * fastest[(r.n, r.k, r.groups)]:
            continue
        out.append((float(r.m), flops / (secs * peak)))  # type: ignore[arg-type]
    return out


def reduce_curve(tables: list[BenchTable]) -> list[tuple[float, float]]:
    """The curve's points: (M, median share) at each measured M, ascending."""
    by_m: dict[float, list[float]] = defaultdict(list)
    for t in tables:
        for m, share in _shares(t):
            by_m[round(m, 3)].append(share)
    return [(m, round(statistics.median(v), 4)) for m, v in sorted(by_m.items())]


def _by_m(table: BenchTable) -> dict[float, float]:
    return {round(m, 3): share for m, share in _shares(table)}


def beyond_curve(
    last: float, tables: list[BenchTable], growth: list[BenchTable]
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(levels, growth) of a grouped curve past its last M (see the module docstring); empty without tables."""
    if not tables or not growth:
        return [], []
    by_experts: dict[float, list[float]] = defaultdict(list)
    for t in tables:
        experts = {r.local_experts for r in t.rows}
        assert len(experts) == 1 and None not in experts, t.id
        by_experts[float(experts.pop())].append(_by_m(t)[last])  # type: ignore[arg-type]
    levels = [(e, round(statistics.median(v), 4)) for e, v in sorted(by_experts.items())]
    grown: dict[float, list[float]] = defaultdict(list)
    for t in growth:
        shares = _by_m(t)
        for m, share in shares.items():
            if m > last:
                grown[m].append(share / shares[last])
    return levels, [(m, round(statistics.median(v), 4)) for m, v in sorted(grown.items())]


def fit_kernel_curves() -> dict[str, dict[str, object]]:
    """Every catalog curve re-reduced from its tables, summarised by its saturated share (for `cloudmatrix
    calibrate`); ``points`` holds the whole reduction for the catalog test."""
    bench = microbench()
    out: dict[str, dict[str, object]] = {}
    for c in curves():
        points = reduce_curve([bench[t] for t in c.tables])
        levels, growth = beyond_curve(
            points[-1][0],
            [bench[t] for t in c.tables + c.prefill_tables] if c.prefill_tables else [],
            [bench[t] for t in c.growth_tables],
        )
        stored = f".w{c.weights}" if c.weights else ""
        name = f"{c.kernel}.{c.op}.{c.format}{stored}" + (f".tp{c.split}" if c.split > 1 else "")
        out[f"kernels.{name}.{c.chips[0]}.plateau"] = {
            "fitted": points[-1][1],
            "catalog": c.points[-1][1],
            "rows": f"{len(points)} M points of {', '.join(c.tables + c.prefill_tables + c.growth_tables)}",
            "points": points,
            "levels": levels,
            "growth": growth,
        }
    return out
