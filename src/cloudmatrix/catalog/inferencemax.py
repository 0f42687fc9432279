"""An adapter for InferenceMAX CSVs, read exactly as shipped (any file with its columns): each row becomes a
``ValidationRow`` with its layout, formats, workload and measured metrics, mapped onto the catalog by
``data/validation/inferencemax.yaml``."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cloudmatrix.catalog.sourced import describe_validation_error, read_yaml
from cloudmatrix.catalog.validation import VALIDATION_DIR, BenchWorkload, RoleLayout, ValidationRow
from cloudmatrix.csv_input import read_csv_rows
from cloudmatrix.errors import ConfigError

REQUIRED = (
    "model",
    "hw",
    "framework",
    "precision",
    "spec",
    "disagg",
    "isl",
    "osl",
    "conc",
    "parallel",
    "gpus_total",
    "tput_per_gpu",
    "output_tput_per_gpu",
    "median_tpot_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
)
METRIC_COLUMNS = {  # our metric -> the CSV's column
    "output_tok_s_per_chip": "output_tput_per_gpu",
    "tok_s_per_chip": "tput_per_gpu",
    "tpot_ms": "median_tpot_ms",
    "ttft_ms": "median_ttft_ms",
    "p99_ttft_ms": "p99_ttft_ms",
}
# Every row is a simulation of the benchmark (seconds each): 20,000 rows is ~100x the shipped file and a day
# on one core. A row is ~200 bytes; the size bound leaves room for long image names and is checked first.
MAX_CSV_ROWS = 20_000
MAX_CSV_BYTES = 16 * 1024 * 1024
_WORKER = re.compile(r"tp(\d+)\s+ep(\d+)\s+dpa(true|false)", re.IGNORECASE)
_DISAGG = re.compile(r"P(\d+)x\[([^\]]*)\]\s*D(\d+)x\[([^\]]*)\]", re.IGNORECASE)
_RUNNER = re.compile(r"(?:cluster:)?([a-z0-9]+)((?:-[a-z0-9]+)*?)(?:_\d+)?")  # base, -tags, _index


@cache
def mapping() -> dict[str, Any]:
    return dict(read_yaml(VALIDATION_DIR / "inferencemax.yaml"))


def read_inferencemax(path: Path, family_of: Callable[[str], str] = lambda _: "") -> list[ValidationRow]:
    """Every row of an InferenceMAX CSV; errors name the file, line and column. The file's size and row count
    are bounded before any row is mapped. ``family_of`` gives a catalog system's chip family (for formats
    that differ by family)."""
    header, records = read_csv_rows(path, "corpus", max_bytes=MAX_CSV_BYTES, max_rows=MAX_CSV_ROWS)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ConfigError(f"{path.name}: not an InferenceMAX CSV (missing columns: {', '.join(missing)})")
    rows, seen = [], set()
    for line, cells in records:
        rec = dict(zip(header, cells, strict=True))
        try:
            row = _row(rec, family_of)
        except (ValueError, KeyError, ValidationError) as e:
            if isinstance(e, ValidationError):
                msg = describe_validation_error(e)
            else:  # a KeyError's str() is its quoted key
                msg = f"missing value for {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
            raise ConfigError(f"{path.name} line {line}: {msg}") from None
        if row.id in seen:
            row = row.model_copy(update={"id": f"{row.id}-r{rec.get('run_id') or line}"})
        seen.add(row.id)
        rows.append(row)
    return rows


def _number(rec: dict[str, str], column: str, kind: type = float) -> Any:
    """A positive finite number from a cell; ``kind=int`` also requires a whole number."""
    raw = (rec.get(column) or "").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"column {column}: expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"column {column}: expected a positive finite number, got {raw!r}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"column {column}: expected a whole number, got {raw!r}")
        return int(value)
    return value


def _lookup(table: str, key: str, column: str) -> Any:
    entries = mapping()[table]
    if key not in entries:
        raise ValueError(f"column {column}: {key!r} is not mapped (known: {', '.join(entries)})")
    return entries[key]


def _system(hw: str) -> str:
    """The catalog system of a runner type or runner name: its base name, whatever launcher, site or engine
    tags and runner index follow it (``b200-trt``, ``gb300-nv``, ``mi355x-amd_0``)."""
    table, key = mapping()["hardware"], hw.strip().lower()
    if key in table:
        return str(table[key])
    m = _RUNNER.fullmatch(key)
    tags = m[2].split("-")[1:] if m else []
    unknown = [t for t in tags if t not in mapping()["runner_tags"]]
    if m is None or m[1] not in table or unknown:
        known, tags_known = ", ".join(table), ", ".join(mapping()["runner_tags"])
        raise ValueError(f"column hw: {hw!r} is not mapped (known: {known}; each optionally with -tags: {tags_known})")
    return str(table[m[1]])


def _stack(framework: str, family: str) -> str:
    """The stack of a framework name; some name a different stack per chip family (``sglang-disagg`` runs
    MoRI on AMD)."""
    entry = _lookup("frameworks", framework, "framework")
    return str(entry.get(family, entry["default"]) if isinstance(entry, dict) else entry)


def _worker(text: str) -> tuple[int, int, bool]:
    m = _WORKER.fullmatch(text.strip())
    if not m:
        raise ValueError(f"column parallel: expected 'tpN epN dpatrue|false', got {text!r}")
    return int(m[1]), int(m[2]), m[3].lower() == "true"


def _chunk_per_chip(stack: str, system: str, chips: int, dpa: bool) -> float:
    """The stack's chunked-prefill budget as the benchmark sets it: per rank with DP attention, else per
    engine (shared by its GPUs)."""
    for rule in mapping()["chunked_prefill"]:
        if stack in rule["stacks"] and system in rule.get("systems", [system]):
            return float(rule["tokens"]) if dpa else rule["tokens"] / chips
    raise ValueError(f"no chunked-prefill budget for {stack} on {system}")


def _launched(
    table: str, stack: str, system: str, model: str, precision: str, conc: int, image: str = ""
) -> dict[str, Any] | None:
    """The first launch rule of ``table`` that matches the row (each key a rule leaves out matches any)."""
    for rule in mapping().get(table, []):
        if (
            stack in rule["stacks"]
            and system in rule.get("systems", [system])
            and model in rule.get("models", [model])
            and rule.get("precision", precision) == precision
            and conc >= rule.get("min_conc", 0)
            and image in rule.get("images", [image])
        ):
            return dict(rule)
    return None


def _kernels(rec: dict[str, str], stack: str, system: str, model: str) -> list[str]:
    """The GEMM kernels the run's environment forced (a launch rule matching its stack, system, model and
    container image), else none: the stack's own list applies."""
    precision, conc = rec["precision"].strip().lower(), _number(rec, "conc", int)
    rule = _launched("kernels", stack, system, model, precision, conc, rec.get("image", "").strip())
    return list(rule["kernels"]) if rule else []


def _launch_settings(rec: dict[str, str], stack: str, system: str, dpa: bool) -> dict[str, Any]:
    """A co-located row's launch settings the twin models (memory fraction, scheduler receive interval, and
    the attention-DP balance of a DP-attention run)."""
    model = _lookup("models", rec["model"].strip(), "model")
    precision, conc = rec["precision"].strip().lower(), _number(rec, "conc", int)
    memory = _launched("memory_fraction", stack, system, model, precision, conc)
    recv = _launched("recv_interval", stack, system, model, precision, conc)
    balance = _launched("attention_dp_balance", stack, system, model, precision, conc) if dpa else None
    return {
        **({"memory_fraction": memory["fraction"]} if memory else {}),
        **({"recv_interval": recv["interval"]} if recv else {}),
        **(
            {"attention_dp_balance": {k: balance[k] for k in ("timeout_iters", "batching_wait_iters")}}
            if balance
            else {}
        ),
    }


def _layouts(rec: dict[str, str], disagg: bool, stack: str, system: str) -> dict[str, RoleLayout]:
    parallel = rec["parallel"].strip()
    if not disagg:
        tp, ep, dpa = _worker(parallel)
        chips = _number(rec, "gpus_total", int)
        chunk = _chunk_per_chip(stack, system, chips, dpa)
        launched = _launch_settings(rec, stack, system, dpa)
        return {
            "aggregated": RoleLayout(
                chips=chips, tp=tp, ep=ep, dp_attention=dpa, chunk_tokens_per_chip=chunk, **launched
            )
        }
    m = _DISAGG.fullmatch(parallel)
    if not m:
        raise ValueError(f"column parallel: expected 'PnX[...] DmX[...]', got {parallel!r}")
    out = {}
    # the tp/ep labels inside the brackets are unreliable for disaggregated rows; GPU counts are not
    for role, count, inner, column in (("prefill", m[1], m[2], "gpus_prefill"), ("decode", m[3], m[4], "gpus_decode")):
        n, gpus = int(count), _number(rec, column, int)
        if n < 1 or gpus % n:
            raise ValueError(f"column {column}: {gpus} GPUs do not split into {n} {role} workers")
        tp, ep, dpa = _worker(inner)
        budget = _chunk_per_chip(stack, system, gpus // n, dpa) if role == "prefill" else None
        out[role] = RoleLayout(
            instances=n, chips=gpus // n, tp=tp, ep=ep, dp_attention=dpa, chunk_tokens_per_chip=budget
        )
    return out


def _formats(model: str, precision: str, family: str) -> tuple[str, str, bool]:
    per_model = mapping()["formats"].get(model, {})
    if precision not in per_model:
        raise ValueError(f"precision {precision!r} is not mapped for {model}")
    f = per_model[precision]
    weights, act = f["weights"], f["activations"]
    if isinstance(weights, dict):
        if family not in weights:
            raise ValueError(
                f"precision {precision!r} of {model} is not mapped on {family or 'this'} chips "
                f"(known: {', '.join(weights)})"
            )
        weights = weights[family]
    if isinstance(act, dict):
        act = act.get(family, weights)
    return str(weights), str(act), bool(f.get("assumed"))


def _kv(stack: str, precision: str, system: str, model: str, image: str) -> str:
    """The KV-cache dtype of the first rule matching the row (each key a rule leaves out matches any)."""
    for rule in mapping()["kv"]:
        if (
            stack in rule.get("stacks", [stack])
            and rule.get("precision", precision) == precision
            and system in rule.get("systems", [system])
            and model in rule.get("models", [model])
            and image in rule.get("images", [image])
        ):
            return str(rule["kv"])
    raise ValueError(f"no KV dtype rule for {stack} {precision}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _layout_slug(parallel: str) -> str:
    """``tp8 ep1 dpafalse`` -> ``tp8-ep1``; ``P1x[tp1 ep1 dpafalse] D2x[tp2 ep2 dpatrue]`` ->
    ``p1-tp1-ep1-d2-tp2-ep2-dpa``."""
    text = re.sub(r"dpafalse", "", parallel.lower()).replace("dpatrue", "dpa")
    return _slug(re.sub(r"([pd])(\d+)x", r"\1\2 ", text))


def series_key(rec: dict[str, str]) -> str:
    """The deployment swept over concurrency, in the CSV's own words (stable whatever the mapping)."""
    cols = ("hw", "model", "framework", "precision", "spec", "disagg", "isl", "osl", "parallel")
    return "imx|" + "|".join(rec[c].strip() for c in cols)


def _row(rec: dict[str, str], family_of: Callable[[str], str]) -> ValidationRow:
    empty = next((c for c in REQUIRED if not rec[c].strip()), None)
    if empty is not None:
        raise ValueError(f"column {empty}: an empty cell; expected a value")
    system = _system(rec["hw"])
    family = family_of(system)
    stack = _stack(rec["framework"].strip(), family)
    model = _lookup("models", rec["model"].strip(), "model")
    precision = rec["precision"].strip().lower()
    disagg = rec["disagg"].strip().lower() == "true"
    weights, activations, formats_assumed = _formats(model, precision, family)
    conc, isl, osl = _number(rec, "conc", int), _number(rec, "isl", int), _number(rec, "osl", int)
    w = mapping()["workload"]
    mtp = mapping()["mtp"] if rec["spec"].strip().lower() == "mtp" else None
    assumed = (["activations"] if formats_assumed else []) + (["mtp", "mtp_acceptance"] if mtp else [])
    run = rec.get("run_id", "").strip()
    return ValidationRow(
        id=f"imx-{_slug(rec['hw'])}-{_slug(rec['framework'])}-{model}-{precision}{'-mtp' if mtp else ''}-"
        f"{isl}x{osl}-{_layout_slug(rec['parallel'])}-c{conc}",
        source=f"SA-IMX run {run or '?'} ({rec.get('date', '').strip() or 'undated'}; {rec.get('image', '').strip()})",
        system=system,
        model=model,
        stack=stack,
        kind="e2e",
        weights=weights,
        activations=activations,
        kv=_kv(stack, precision, system, model, rec.get("image", "").strip()),
        mtp=mtp["depth"] if mtp else 0,
        mtp_acceptance=mtp["acceptance"] if mtp else None,
        kernels=_kernels(rec, stack, system, model),
        workload=BenchWorkload(
            input_len=isl,
            output_len=osl,
            range_ratio=w["range_ratio"],
            concurrency=conc,
            num_requests=w["requests_per_client"] * conc,
        ),
        measured={metric: _number(rec, col) for metric, col in METRIC_COLUMNS.items()},
        series=series_key(rec),
        assumed=assumed,
        **_layouts(rec, disagg, stack, system),
    )
