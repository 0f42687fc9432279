"""Every model figure the docs quote, produced from the code: run the commands the docs quote, store what
they print in docs/figures.json, and render the docs' figure tables (between ``<!-- figures:ID -->`` and
``<!-- /figures -->``) and quoted sentences from those stored outputs.

    python scripts/doc_figures.py           # re-run every source, write docs/figures.json, update the docs
    python scripts/doc_figures.py --check   # exit 1, naming each, where a doc differs from the stored outputs

tests/test_doc_figures.py checks that the docs match the stored outputs and that the cheap sources still
print them. A figure that no longer matches the code is updated from the code, never the other way.
Measured timings (benchmarks) are not model figures and are not here."""

from __future__ import annotations

import io
import json
import re
import statistics
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


def _residual_medians() -> dict[str, float]:
    """Median |error| % of the predicted rows per metric in the stored residual table (what `validate`
    reports on the shipped corpus; rewritten with the table by `validate --write-residuals`)."""
    from cloudmatrix.catalog.residuals import stored_residuals

    errors: dict[str, list[float]] = {}
    for r in stored_residuals():
        if r.get("role") == "predicted" and r.get("measured") and r.get("predicted") is not None:
            errors.setdefault(r["metric"], []).append(abs(r["predicted"] - r["measured"]) / r["measured"] * 100)
    return {k: statistics.median(v) for k, v in sorted(errors.items())}


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
    "residual-medians": Source((), lambda d: d),
}


def produce(name: str) -> Any:
    source = SOURCES[name]
    return source.pick(_residual_medians() if not source.argv else _run_cli(source.argv))


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


BLOCKS: dict[str, tuple[str, Callable[[Outputs], str]]] = {
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
        """The sentence with any figures in its fields (to find the one to replace)."""
        parts = re.split(r"\{[^{}]*\}", self.template)
        return re.compile(r"[-+]?[\d,]*\.?\d+".join(re.escape(p) for p in parts))


QUOTES: tuple[Quote, ...] = (
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
        "Today's median error on the predicted rows: {out:.1f} % on\n  output tok/s per chip, {tpot:.1f} % on TPOT, "
        "{ttft:.0f} % on TTFT",
        ("residual-medians",),
        lambda o: {
            "out": o["residual-medians"]["output_tok_s_per_chip"],
            "tpot": o["residual-medians"]["tpot_ms"],
            "ttft": o["residual-medians"]["ttft_ms"],
        },
    ),
)

MARKER = re.compile(r"<!-- figures:(?P<id>[\w-]+) -->\n(?P<body>.*?)\n<!-- /figures -->", re.DOTALL)


def doc_paths() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def stale(outputs: Outputs) -> list[str]:
    """Where a doc differs from what the outputs render (empty: every quoted figure matches)."""
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

    outputs = {name: produce(name) for name in SOURCES}
    write_file(FIGURES_PATH, "figures", json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    for path, text in rendered_docs(outputs).items():
        write_file(path, "doc", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
