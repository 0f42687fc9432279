"""Every model figure the docs quote, produced from the code: run the commands the docs quote, store what
they print in docs/figures.json, and render the docs' figure tables (between ``<!-- figures:ID -->`` and
``<!-- /figures -->``) and quoted sentences from those stored outputs.

    python scripts/doc_figures.py           # re-run every source, write docs/figures.json, update the docs
    python scripts/doc_figures.py NAME ...  # re-run only these sources (the others as stored)
    python scripts/doc_figures.py --check   # exit 1, naming each, where a doc differs from the stored outputs

tests/test_doc_figures.py checks that the docs match the stored outputs and that the cheap sources still
print them. A figure that no longer matches the code is updated from the code, never the other way.
Measured timings (benchmarks) are not model figures and are not here."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES_PATH = ROOT / "docs" / "figures.json"
COMPARED = ("cloudmatrix384", "gb200-nvl72", "hgx-h800", "hgx-h100", "hgx-h200", "hgx-b200")
COMPARE_KEYS = (
    "system",
    "feasible",
    "mode",
    "batch_per_chip",
    "tpot_ms",
    "ttft_ms",
    "decode_tok_s_per_chip",
    "prefill_tok_s_per_chip",
    "output_tok_s_per_chip",
    "output_tok_s_per_kw",
    "output_tok_s_per_musd",
    "why",
)
Outputs = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """A command whose printed JSON the docs quote, and the part of it they need."""

    argv: tuple[str, ...]
    pick: Callable[[dict[str, Any]], Any]
    cheap: bool = True  # re-run by the test (seconds); the others are checked against their stored output


def _compare_pick(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: s.get(k) for k in COMPARE_KEYS} for s in d["systems"]]


def _sim_pick(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("throughput_per_chip_tok_s", "kv_occupancy", "slo_attainment", "goodput_req_s", "num_requests")
    out = {k: d[k] for k in keys} | {"ttft_ms_mean": d["ttft_ms"]["mean"]}
    return out | ({"ems_token_hit_rate": d["ems"]["token_hit_rate"]} if "ems" in d else {})


def _run_cli(argv: tuple[str, ...]) -> dict[str, Any]:
    from cloudmatrix.cli.app import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main([*argv, "--json"])
    if code != 0:
        raise SystemExit(f"cloudmatrix {' '.join(argv)} exited {code}")
    return dict(json.loads(buf.getvalue()))


def _holdout_figures() -> dict[str, dict[str, dict[str, float | None]]]:
    """Out-of-group median |error| % and coverage per kind and metric, as `validate --holdout` scores the
    stored hold-out residuals (rewritten by `validate --holdout ... --write-residuals`)."""
    from cloudmatrix.catalog.residuals import stored_holdout_residuals
    from cloudmatrix.studies.holdout_score import score_prospective, score_stored

    table = stored_holdout_residuals()
    scored = {kind: score_stored(kind, table) for kind in ("series", "family", "stack", "model")}
    scored["prospective"] = score_prospective(table)  # the corpora added last, as if unseen
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for kind, summary in scored.items():
        metrics = summary["metrics"]
        out[kind] = {
            m: {"median": metrics[m]["median_abs_error_pct"], "coverage": metrics[m]["coverage"]}
            for m in ("output_tok_s_per_chip", "tpot_ms", "ttft_ms")
        }
    return out


def _holdout_quote(o: Outputs) -> dict[str, Any]:
    """The README's out-of-group sentence: a new deployment (``series``), a new family (its medians; the
    coverage range over family, stack and model), and the pseudo-prospective check's coverage."""
    h = o["holdout-figures"]
    metrics = {"out": "output_tok_s_per_chip", "tpot": "tpot_ms", "ttft": "ttft_ms"}
    values: dict[str, Any] = {}
    for short, metric in metrics.items():
        values[f"s_{short}"] = h["series"][metric]["median"]
        values[f"f_{short}"] = h["family"][metric]["median"]
        covers = [100 * h[k][metric]["coverage"] for k in ("family", "stack", "model")]
        values[f"{short}_lo"], values[f"{short}_hi"] = min(covers), max(covers)
        values[f"p_{short}"] = 100 * h["prospective"][metric]["coverage"]
    series = [100 * h["series"][m]["coverage"] for m in metrics.values()]
    values["s_lo"], values["s_hi"] = min(series), max(series)
    return values


def _reproduce_pick(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("median_abs_error_pct", "predicted_median_abs_error_pct", "max_abs_error_pct")
    row_keys = ("id", "quantity", "unit", "published", "predicted", "error_pct", "tolerance_pct", "role")
    return {k: d[k] for k in keys} | {"rows": [{k: r[k] for k in row_keys} for r in d["rows"]]}


def _estimate_pick(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("step_ms", "tpot_ms", "throughput_per_chip_tok_s", "tokens_per_step", "roofline_step_ms", "microbatch")
    layer = [[op, us] for op, us in d["layer_breakdown_us"].items()]  # a list: the critical path's order
    return {k: d[k] for k in keys} | {"layer_us": d["layer_us"], "layer_breakdown_us": layer}


def _plan_pick(d: dict[str, Any]) -> dict[str, Any]:
    keep = ("rank", "chips", "rate_req_s", "ttft_ms", "tpot_ms", "tpot_operating_ms", "output_tok_s_per_chip")
    best = d["ranked"][0]
    rank1 = {k: best[k] for k in keep} | {"prefill": best["prefill"], "decode": best["decode"]}
    check = {k: best["check"][k] for k in ("simulated", "error_pct", "requests")}
    return {"search": d["search"], "best_decode": d["best_decode"], "rank1": rank1 | {"check": check}}


def _paper_shape_best() -> dict[str, Any]:
    """The best decode batch of the paper's instance shape (160 chips, EP320, INT8, MTP 1) within 50 ms TPOT,
    over the planner's batch grid with and without microbatching."""
    from cloudmatrix.deploy import Deployment, Eplb, Phase
    from cloudmatrix.errors import CloudMatrixError
    from cloudmatrix.estimate import estimate
    from cloudmatrix.planner.space import SearchSpace

    best: dict[str, Any] = {}
    for batch in SearchSpace().batches_per_chip:
        for mb in (True, False):
            dep = Deployment(
                phase=Phase.DECODE, num_chips=160, ep=320, batch_per_chip=batch, input_len=4096, output_len=256,
                precision="int8", mtp=1, mtp_acceptance=0.7, eplb=Eplb.DEFAULT, microbatch=mb,
                stack="cloudmatrix-infer",
            )  # fmt: skip
            try:
                e = estimate("cloudmatrix384", "deepseek-r1", dep)
            except CloudMatrixError:
                continue
            if e.tpot_s <= 0.050 and e.throughput_per_chip_tok_s > best.get("tok_s_per_chip", 0):
                best = {"batch": batch, "tok_s_per_chip": e.throughput_per_chip_tok_s, "tpot_ms": e.tpot_s * 1e3}
    return best


SOURCES: dict[str, Source] = {
    "compare-4k256-50": Source(
        ("compare", "--workload", "4k-256", "--tpot-slo", "50", "--system", ",".join(COMPARED)), _compare_pick
    ),
    "compare-4k256-15": Source(
        ("compare", "--workload", "4k-256", "--tpot-slo", "15", "--system", ",".join(COMPARED)), _compare_pick
    ),
    "simulate-paper": Source(("simulate",), _sim_pick, cheap=False),
    "simulate-decode-loaded": Source(("simulate", "cm384-decode-loaded"), _sim_pick, cheap=False),
    "simulate-ems": Source(("simulate", "cm384-ems"), _sim_pick, cheap=False),
    "simulate-ems-vpc": Source(("simulate", "cm384-ems", "--set", "ems.plane=vpc"), _sim_pick, cheap=False),
    "holdout-figures": Source((), lambda d: d),
    "plan-paper": Source(("plan",), _plan_pick, cheap=False),
    "plan-dense-h200": Source(
        ("plan", "--system", "hgx-h200", "--model", "llama-3.1-405b", "--workload", "2k-256", "--top", "1"), _plan_pick
    ),
    "reproduce-cloudmatrix-infer": Source(("reproduce", "cloudmatrix-infer"), _reproduce_pick),
    "reproduce-hopper-baselines": Source(("reproduce", "hopper-baselines"), _reproduce_pick),
    "estimate-paper-decode": Source(
        (
            "estimate",
            "--phase",
            "decode",
            "--chips",
            "160",
            "--batch-per-chip",
            "96",
            "--kv-len",
            "4096",
            "--mtp",
            "1",
            "--mtp-acceptance",
            "0.7",
            "--eplb",
            "default",
        ),
        _estimate_pick,
    ),  # fmt: skip
    "paper-shape-decode": Source((), lambda d: d),
}
COMPUTED: dict[str, Callable[[], Any]] = {
    "holdout-figures": lambda: _holdout_figures(),
    "paper-shape-decode": lambda: _paper_shape_best(),
}


def produce(name: str) -> Any:
    source = SOURCES[name]
    return source.pick(COMPUTED[name]() if not source.argv else _run_cli(source.argv))


# ---- rendering: tables between markers, and quoted sentences ----


def _compare_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| System | Mode | Batch/chip | TPOT ms | TTFT ms | Decode tok/s/chip | Prefill tok/s/chip | Out tok/s/chip "
        "| Out tok/s per kW | Out tok/s per $M |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        figures = ("decode_tok_s_per_chip", "prefill_tok_s_per_chip", "output_tok_s_per_chip")
        money = ("output_tok_s_per_kw", "output_tok_s_per_musd")
        lines.append(
            f"| {r['system']} | {r['mode']} | {r['batch_per_chip']:g} | {r['tpot_ms']:.1f} | {r['ttft_ms']:,.0f} | "
            + " | ".join(f"{r[k]:,.0f}" for k in (*figures, *money))
            + " |"
        )
    why = ["| System | Why |", "|---|---|"] + [f"| {r['system']} | {r['why']} |" for r in rows]
    return "\n".join(lines) + "\n\n" + "\n".join(why)


def _reproduce_table(d: dict[str, Any]) -> str:
    def value(v: float, unit: str) -> str:
        return f"{v:.3f}x" if unit == "x" else f"{v:,.1f}"

    lines = ["| id | quantity | published | predicted | error % | tol % | role |", "|---|---|---:|---:|---:|---:|---|"]
    lines += [
        f"| {r['id']} | {r['quantity']} | {value(r['published'], r['unit'])} | {value(r['predicted'], r['unit'])} | "
        f"{r['error_pct']:+.1f} | {r['tolerance_pct']:.0f} | {r['role']} |"
        for r in d["rows"]
    ]
    caption = (
        f"Caption: median |error| {d['median_abs_error_pct']} % (predicted rows: "
        f"{d['predicted_median_abs_error_pct']} %), max |error| {d['max_abs_error_pct']} %"
    )
    return "\n".join(lines) + "\n\n" + caption


def _layer_table(d: dict[str, Any]) -> str:
    rows = [f"| {op} | {us:,.1f} |" for op, us in d["layer_breakdown_us"]]
    return "\n".join(["| Op | µs |", "|---|---:|", *rows])


BLOCKS: dict[str, tuple[str, Callable[[Outputs], str]]] = {
    "reproduce-cloudmatrix-infer": (
        "reproduce-cloudmatrix-infer",
        lambda o: _reproduce_table(o["reproduce-cloudmatrix-infer"]),
    ),
    "reproduce-hopper-baselines": (
        "reproduce-hopper-baselines",
        lambda o: _reproduce_table(o["reproduce-hopper-baselines"]),
    ),
    "estimate-paper-decode-layer": ("estimate-paper-decode", lambda o: _layer_table(o["estimate-paper-decode"])),
    "compare-4k256-50": ("compare-4k256-50", lambda o: _compare_table(o["compare-4k256-50"])),
    "compare-4k256-15": ("compare-4k256-15", lambda o: _compare_table(o["compare-4k256-15"])),
}


def _system(o: Outputs, source: str, system: str) -> dict[str, Any]:
    return next(r for r in o[source] if r["system"] == system)


def _cm384_pools(o: Outputs) -> dict[str, float]:
    """Requests/s per chip of CM384's prefill (P) and decode (D) at 4K/256 under 50 ms, as compare sizes
    pools (the decode emits output_len − 1 tokens per request)."""
    r = _system(o, "compare-4k256-50", "cloudmatrix384")
    return {"p": r["prefill_tok_s_per_chip"] / 4096, "d": r["decode_tok_s_per_chip"] / 255}


@dataclass(frozen=True)
class Quote:
    """A sentence of a doc with figures in it: ``{name:spec}`` fields filled by ``values`` from the outputs."""

    doc: str
    template: str
    sources: tuple[str, ...]
    values: Callable[[Outputs], dict[str, Any]]

    def render(self, o: Outputs) -> str:
        return self.template.format(**self.values(o))

    def pattern(self) -> re.Pattern[str]:
        """The sentence with any figure (or one word, e.g. serial) in its fields (to find the one to replace)."""
        parts = re.split(r"\{[^{}]*\}", self.template)
        return re.compile(r"(?:[-+−]?[\d,]*\.?\d+|[A-Za-z]+)".join(re.escape(p) for p in parts))


def _signed(pct: float) -> str:
    return f"{pct:+.1f}".replace("-", "−")


def _plan_rank1(o: Outputs) -> dict[str, Any]:
    r = o["plan-paper"]["rank1"]
    p, d, c = r["prefill"], r["decode"], r["check"]
    sim, err = c["simulated"], c["error_pct"]
    return {
        "p_inst": p["instances"], "p_chips": p["chips"], "p_ep": p["ep"], "p_tp": max(p["tp"], p["attention_tp"]),
        "d_n": "one" if d["instances"] == 1 else d["instances"],
        "d_word": "instances" if d["instances"] > 1 else "instance",
        "p_k": p["tokens_per_chip"] // 1024, "d_chips": d["chips"], "d_ep": d["ep"], "d_b": d["batch_per_chip"],
        "d_mtp": d["mtp"], "chips": r["chips"], "rate": r["rate_req_s"], "out": r["output_tok_s_per_chip"],
        "ttft": r["ttft_ms"] / 1e3, "cap": r["tpot_ms"], "op": r["tpot_operating_ms"], "n": c["requests"],
        "s_out": sim["output_tok_s_per_chip"], "e_out": _signed(err["output_tok_s_per_chip"]),
        "s_ttft": sim["ttft_ms"] / 1e3, "e_ttft": _signed(err["ttft_ms"]),
        "s_tpot": sim["tpot_ms"], "e_tpot": _signed(err["tpot_ms"]),
    }  # fmt: skip


def _plan_best_decode(o: Outputs) -> dict[str, Any]:
    b, paper = o["plan-paper"]["best_decode"], o["paper-shape-decode"]
    return {
        "chips": b["chips"], "ep": b["ep"], "b": b["batch_per_chip"], "mtp": b["mtp"], "tok": b["tok_s_per_chip"],
        "tpot": b["tpot_ms"], "pb": paper["batch"], "ptok": paper["tok_s_per_chip"], "ptpot": paper["tpot_ms"],
    }  # fmt: skip


def _row(o: Outputs, row_id: str) -> dict[str, Any]:
    return next(r for r in o["reproduce-cloudmatrix-infer"]["rows"] if r["id"] == row_id)


def _err(row: dict[str, Any], plus: str = "") -> str:
    """An error % as the docs print it: one decimal, a true minus sign, ``plus`` before a positive one."""
    e = round(row["error_pct"], 1)
    return f"{plus if e > 0 else ''}{e:.1f}".replace("-", "−")


def _ems_quotes() -> tuple[Quote, ...]:
    """EMS model-cache rows (P3 Table 1) and the context-cache ratios (Fig. 23) of `reproduce`."""
    table = (
        ("Warm start (local DRAM / EMS) | ~5 s | {v:.2f} s | {e} % | fitted", "model-warm-start"),
        ("Cold start, EMS | ~320 s | {v:.1f} s | {e} % | fitted", "model-cold-start-ems"),
        ("(8 contending) | ~2,560 s | {v:,.0f} s | {e} % | predicted", "model-cold-start-obs"),
        ("Switch, local DRAM (hit 12.5 %) | ~281 s | {v:.1f} s | {e} % | predicted", "model-switch-local-dram"),
        ("Switch, EMS (hit 100 %) | ~5 s | {v:.2f} s | {e} % | predicted", "model-switch-ems"),
    )
    rows = tuple(
        Quote(
            "docs/ems.md",
            text,
            ("reproduce-cloudmatrix-infer",),
            lambda o, i=row_id: {"v": _row(o, i)["predicted"], "e": _err(_row(o, i))},
        )
        for text, row_id in table
    )
    ratios = Quote(
        "docs/ems.md",
        "TTFT at 50 % reuse {a:.2f}× vs {ap:.2f}×\n  ({ae} %), throughput 12.5 → 50 % reuse {b:.2f}× vs {bp:.2f}× "
        "({be} %), UB vs VPC up to {c:.2f}× vs {cp:.2f}×\n  ({ce} %) are within 15 %. At 90 % reuse the model is far "
        "off (TTFT {d:.2f}× vs {dp:.2f}×, throughput {f:.1f}× vs\n  {fp:.2f}×)",
        ("reproduce-cloudmatrix-infer",),
        lambda o: {
            k: v
            for key, row_id in (
                ("a", "ems-ttft-reuse50"),
                ("b", "ems-throughput-reuse50-vs-12"),
                ("c", "ems-ub-vs-vpc"),
                ("d", "ems-ttft-reuse90"),
                ("f", "ems-throughput-reuse90"),
            )
            for k, v in (
                (key, _row(o, row_id)["predicted"]),
                (key + "p", _row(o, row_id)["published"]),
                (key + "e", _err(_row(o, row_id), "+")),
            )
        },  # fmt: skip
    )
    return (*rows, ratios)


def _gap_quotes() -> tuple[Quote, ...]:
    """model.md §12: the CM384 rows outside tolerance, as `reproduce` prints them."""
    src = ("reproduce-cloudmatrix-infer",)
    return (
        Quote(
            "docs/model.md",
            "`ems-ttft-reuse90` ({a:.2f}× vs {ap:.2f}×) and `ems-throughput-reuse90` ({b:.1f}× vs {bp:.2f}×)",
            src,
            lambda o: {
                "a": _row(o, "ems-ttft-reuse90")["predicted"],
                "ap": _row(o, "ems-ttft-reuse90")["published"],
                "b": _row(o, "ems-throughput-reuse90")["predicted"],
                "bp": _row(o, "ems-throughput-reuse90")["published"],
            },  # fmt: skip
        ),
    )


def _dense(o: Outputs) -> dict[str, Any]:
    r = o["plan-dense-h200"]["rank1"]
    p, d, err = r["prefill"], r["decode"], r["check"]["error_pct"]
    return {
        "p_inst": p["instances"], "p_chips": p["chips"], "p_tp": max(p["tp"], p["attention_tp"]),
        "d_inst": d["instances"], "d_chips": d["chips"], "d_tp": d["tp"], "d_b": d["batch_per_chip"],
        "chips": r["chips"], "rate": r["rate_req_s"], "out": r["output_tok_s_per_chip"],
        "within": max(abs(err["output_tok_s_per_chip"]), abs(err["tpot_ms"])), "ttft": _signed(err["ttft_ms"]),
    }  # fmt: skip


QUOTES: tuple[Quote, ...] = (
    Quote(
        "docs/plan.md",
        "- Dense example: Llama 3.1 405B on HGX H200 at 2K/256 and 50 ms TPOT plans {p_inst} prefill instances of "
        "{p_chips} GPUs\n  (TP{p_tp}) and {d_inst} decode instances of {d_chips} GPUs (TP{d_tp}, batch {d_b} per GPU): "
        "{chips} GPUs, {rate:.1f} req/s, {out:.0f} output tok/s\n  per GPU, with the simulation within {within:.1f} % "
        "on throughput and TPOT and {ttft} % on TTFT.",
        ("plan-dense-h200",),
        _dense,
    ),
    *_ems_quotes(),
    *_gap_quotes(),
    Quote(
        "docs/model.md",
        "- step {step:.2f} ms, TPOT {tpot:.2f} ms, {tok:,.0f} tok/s per chip, {tps:.1f} tokens per step per chip "
        "({mb});\n- layers ({mb}): MoE layer {moe:,.0f} µs, dense layer {dense:,.0f} µs;\n"
        "- roofline step {roof:.1f} ms.",
        ("estimate-paper-decode",),
        lambda o: {
            "step": o["estimate-paper-decode"]["step_ms"],
            "tpot": o["estimate-paper-decode"]["tpot_ms"],
            "tok": o["estimate-paper-decode"]["throughput_per_chip_tok_s"],
            "tps": o["estimate-paper-decode"]["tokens_per_step"],
            "mb": "microbatched" if o["estimate-paper-decode"]["microbatch"] else "serial",
            "moe": o["estimate-paper-decode"]["layer_us"]["moe"],
            "dense": o["estimate-paper-decode"]["layer_us"]["dense"],
            "roof": o["estimate-paper-decode"]["roofline_step_ms"],
        },
    ),
    Quote(
        "docs/model.md",
        "the issue-2 rows (absolute serving figures; not the microbenchmarks, not the ablation ratios) the\n"
        "  median |error| is {m} %",
        ("reproduce-cloudmatrix-infer",),
        lambda o: {"m": o["reproduce-cloudmatrix-infer"]["median_abs_error_pct"]},
    ),
    Quote(
        "docs/model.md",
        "The median over predicted rows is {m} %",
        ("reproduce-hopper-baselines",),
        lambda o: {"m": o["reproduce-hopper-baselines"]["predicted_median_abs_error_pct"]},
    ),
    Quote(
        "docs/plan.md",
        "The simulated steady TPOT of rank 1 is {e} % off the analytic operating TPOT",
        ("plan-paper",),
        lambda o: {"e": _signed(o["plan-paper"]["rank1"]["check"]["error_pct"]["tpot_ms"])},
    ),
    Quote(
        "docs/plan.md",
        "all native precisions): {enum:,} candidates enumerated, {mem:,}\npruned for memory, {costed:,} costed in",
        ("plan-paper",),
        lambda o: {
            "enum": o["plan-paper"]["search"]["enumerated"],
            "mem": o["plan-paper"]["search"]["pruned"].get("memory", 0),
            "costed": o["plan-paper"]["search"]["costed"],
        },
    ),
    Quote(
        "docs/plan.md",
        "- **Best decode instance**: {chips} chips, EP{ep}, batch {b}, MTP {mtp}, serial, INT8: {tok:,.0f} tok/s "
        "per NPU at TPOT\n  {tpot:.1f} ms, above the paper's 1,943 (P3). At the paper's shape (160 chips, EP320) "
        "the best is batch {pb} at\n  {ptok:,.0f} tok/s per NPU and {ptpot:.1f} ms.",
        ("plan-paper", "paper-shape-decode"),
        _plan_best_decode,
    ),
    Quote(
        "docs/plan.md",
        "- **Rank 1**: {p_inst} prefill instances of {p_chips} chips (EP{p_ep}, TP{p_tp}, {p_k}K tokens per chip, "
        "microbatched) and {d_n} decode\n  {d_word} of {d_chips} chips (EP{d_ep}, batch {d_b}, MTP {d_mtp}, serial): "
        "{chips} chips at {rate:,.0f} req/s, {out:.1f} output tok/s per chip,\n  TTFT {ttft:.2f} s, TPOT {cap:.1f} "
        "ms at the cap and {op:.1f} ms at the operating occupancy. Simulated ({n:,} requests,\n  steady window): "
        "{s_out:.1f} tok/s per chip ({e_out} %), TTFT {s_ttft:.2f} s ({e_ttft} %), TPOT {s_tpot:.1f} ms ({e_tpot} %).",
        ("plan-paper",),
        _plan_rank1,
    ),
    Quote(
        "docs/compare.md",
        "(CM384 at 50 ms: P = {p:.2f}, D = {d:.2f} req/s per chip)",
        ("compare-4k256-50",),
        _cm384_pools,
    ),
    Quote(
        "docs/simulate.md",
        "so decode runs small, fast batches (about {tok:,.0f} tok/s per chip, {kv:.1f} % mean KV occupancy)",
        ("simulate-paper",),
        lambda o: {
            "tok": o["simulate-paper"]["throughput_per_chip_tok_s"]["decode"],
            "kv": o["simulate-paper"]["kv_occupancy"]["mean"] * 100,
        },
    ),
    Quote(
        "docs/simulate.md",
        "which loads decode to about {tok:,.0f} tok/s per chip",
        ("simulate-decode-loaded",),
        lambda o: {"tok": o["simulate-decode-loaded"]["throughput_per_chip_tok_s"]["decode"]},
    ),
    Quote(
        "docs/simulate.md",
        "token hit rate {hit:.1f} %, mean TTFT\n{ems:,.0f} ms vs {paper:,.0f} ms for `cm384-paper` at the same "
        "110 req/s, {vpc:,.0f} ms with `--set ems.plane=vpc`",
        ("simulate-ems", "simulate-paper", "simulate-ems-vpc"),
        lambda o: {
            "hit": o["simulate-ems"]["ems_token_hit_rate"] * 100,
            "ems": o["simulate-ems"]["ttft_ms_mean"],
            "paper": o["simulate-paper"]["ttft_ms_mean"],
            "vpc": o["simulate-ems-vpc"]["ttft_ms_mean"],
        },
    ),
    Quote(
        "README.md",
        "is off by a median\n  {s_out:.1f} % on output tok/s per chip, {s_tpot:.1f} % on TPOT and {s_ttft:.0f} % "
        "on TTFT, and its 80 % intervals cover {s_lo:.0f}–{s_hi:.0f} % of\n  the measured values; a chip family "
        "the fitted host times never saw is off by {f_out:.0f} %, {f_tpot:.0f} % and\n  {f_ttft:.0f} % on the same "
        "three, and out of family, stack or model the intervals cover {out_lo:.0f}–{out_hi:.0f} %,\n  "
        "{tpot_lo:.0f}–{tpot_hi:.0f} % and {ttft_lo:.0f}–{ttft_hi:.0f} % of them; on the corpora added last, "
        "scored as if unseen, the\n  intervals cover {p_out:.0f} %, {p_tpot:.0f} % and {p_ttft:.0f} % "
        "(`docs/validation.md` §9)",
        ("holdout-figures",),
        _holdout_quote,
    ),
)

MARKER = re.compile(r"<!-- figures:(?P<id>[\w-]+) -->\n(?P<body>.*?)\n<!-- /figures -->", re.DOTALL)


def doc_paths() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def stale(outputs: Outputs) -> list[str]:
    """Where a doc differs from what the outputs render (empty: every quoted figure matches)."""
    missing = sorted(set(SOURCES) - set(outputs))
    if missing:
        return [f"docs/figures.json has no output of {', '.join(missing)}: run scripts/doc_figures.py"]
    problems = []
    for path in doc_paths():
        text = path.read_text()
        for m in MARKER.finditer(text):
            if m["id"] not in BLOCKS:
                problems.append(f"{path.name}: figures:{m['id']} has no renderer")
            elif m["body"] != BLOCKS[m["id"]][1](outputs):
                problems.append(f"{path.name}: figures:{m['id']} differs from {BLOCKS[m['id']][0]}")
    for q in QUOTES:
        if q.render(outputs) not in (ROOT / q.doc).read_text():
            problems.append(f"{q.doc}: {q.render(outputs)!r} is not quoted")
    return problems


def rendered_docs(outputs: Outputs) -> dict[Path, str]:
    """Each doc with its figure blocks and quoted sentences rendered from the outputs."""
    out = {}
    for path in doc_paths():
        text = path.read_text()
        new = MARKER.sub(
            lambda m: (
                f"<!-- figures:{m['id']} -->\n{BLOCKS[m['id']][1](outputs)}\n<!-- /figures -->"
                if m["id"] in BLOCKS
                else m[0]
            ),
            text,
        )
        for q in (q for q in QUOTES if ROOT / q.doc == path):
            found = q.pattern().findall(new)
            if len(found) != 1:
                raise SystemExit(f"{q.doc}: {len(found)} places match {q.template!r}; expected one")
            new = q.pattern().sub(lambda _m, q=q: q.render(outputs), new)
        if new != text:
            out[path] = new
    return out


def load_stored() -> Outputs:
    return dict(json.loads(FIGURES_PATH.read_text()))


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = stale(load_stored())
        for p in problems:
            sys.stderr.write(p + "\n")
        return 1 if problems else 0
    from cloudmatrix.cli.output import write_file

    names = [a for a in argv if not a.startswith("-")] or list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise SystemExit(f"unknown source {unknown[0]}; sources: {', '.join(SOURCES)}")
    outputs = (load_stored() if FIGURES_PATH.exists() else {}) | {name: produce(name) for name in names}
    write_file(FIGURES_PATH, "figures", json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    for path, text in rendered_docs(outputs).items():
        write_file(path, "doc", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
