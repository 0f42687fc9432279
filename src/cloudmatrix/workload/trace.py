"""Trace replay: CSV or JSONL rows of ``timestamp, input_length, output_length[, hash_ids]`` (the public
Mooncake trace format; timestamps in ms, hash_ids are the prompt's prefix blocks)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloudmatrix.csv_input import read_csv_rows
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import MAX_FILE_BYTES, MAX_REQUESTS, MAX_SIM_S, MAX_TOKENS, parse_json, read_text

FIELDS = ("timestamp", "input_length", "output_length")
MAX_TIMESTAMP_MS = MAX_SIM_S * 1e3


@dataclass(frozen=True, kw_only=True)
class Trace:
    timestamp_s: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    hash_ids: list[list[int]] | None


def _row(path: Path, line: int, rec: Any) -> tuple[float, int, int, list[int] | None]:
    where = f"{path.name} line {line}"
    if not isinstance(rec, dict):
        raise ConfigError(f"{where}: expected an object with {', '.join(FIELDS)}")
    for f in FIELDS:
        if rec.get(f) in (None, ""):
            raise ConfigError(f"{where}: missing field '{f}'")
    try:
        if any(isinstance(rec[f], bool) for f in FIELDS):  # float(true) is 1.0: a flag is no length
            raise TypeError
        ts, inp_f, out_f = float(rec["timestamp"]), float(rec["input_length"]), float(rec["output_length"])
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}: timestamp, input_length and output_length must be numbers") from None
    if not all(math.isfinite(v) for v in (ts, inp_f, out_f)):
        raise ConfigError(
            f"{where}: timestamp, input_length and output_length must be finite (got {ts}, {inp_f}, {out_f})"
        )
    if max(inp_f, out_f) > MAX_TOKENS or ts > MAX_TIMESTAMP_MS:
        raise ConfigError(
            f"{where}: lengths must be <= {MAX_TOKENS:,} tokens and timestamps <= {MAX_TIMESTAMP_MS:g} ms"
        )
    if not (inp_f.is_integer() and out_f.is_integer()):  # int() would cut 1.9 tokens to 1 without a word
        raise ConfigError(f"{where}: input_length and output_length must be whole tokens (got {inp_f:g}, {out_f:g})")
    inp, out = int(inp_f), int(out_f)
    if inp < 1 or out < 1 or ts < 0:
        raise ConfigError(f"{where}: lengths must be >= 1 and timestamp >= 0 (got {ts}, {inp}, {out})")
    hashes = rec.get("hash_ids")
    if isinstance(hashes, str):
        hashes = parse_json(hashes, f"{where}: hash_ids") if hashes.strip() else None
    plain_ints = isinstance(hashes, list) and all(isinstance(h, int) and not isinstance(h, bool) for h in hashes)
    if hashes is not None and not plain_ints:
        raise ConfigError(f"{where}: hash_ids must be a list of integers")
    return ts, inp, out, hashes


def _records(path: Path) -> list[tuple[int, Any]]:
    if path.suffix == ".csv":  # bounded and checked by line and column like every CSV input
        header, rows = read_csv_rows(path, "trace", max_bytes=MAX_FILE_BYTES, max_rows=MAX_REQUESTS)
        return [(line, dict(zip(header, cells, strict=True))) for line, cells in rows]
    text = read_text(path, "trace")
    out: list[tuple[int, Any]] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(out) == MAX_REQUESTS:
            raise ConfigError(f"{path.name}: more than {MAX_REQUESTS:,} requests; expected at most that (split it)")
        out.append((i, parse_json(line.removeprefix("\ufeff") if i == 1 else line, f"{path.name} line {i}")))
    return out


def read_trace(path: Path) -> Trace:
    rows = [_row(path, line, rec) for line, rec in _records(path)]
    if not rows:
        raise ConfigError(f"trace {path}: no requests")
    ts = np.array([r[0] for r in rows]) / 1e3
    if np.any(np.diff(ts) < 0):
        bad = int(np.argmax(np.diff(ts) < 0)) + 1
        raise ConfigError(f"trace {path}: timestamps go backwards at request {bad + 1}")
    hashes = [r[3] or [] for r in rows] if any(r[3] for r in rows) else None
    return Trace(
        timestamp_s=ts,
        input_len=np.array([r[1] for r in rows]),
        output_len=np.array([r[2] for r in rows]),
        hash_ids=hashes,
    )
