"""The validation corpus's metric ids and the stored residual table (``validate --write-residuals``), apart
from the corpus schema so that an answer's interval reads them without loading that schema."""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Any

from cloudmatrix.catalog.sourced import DATA_DIR
from cloudmatrix.errors import ConfigError

VALIDATION_DIR = DATA_DIR / "validation"
RESIDUALS_PATH = VALIDATION_DIR / "residuals.json"
# End-to-end metrics (a benchmark client's view) and steady-state ones (one step of one instance).
E2E_METRICS = ("output_tok_s_per_chip", "tok_s_per_chip", "tpot_ms", "ttft_ms", "p99_ttft_ms")
STEADY_METRICS = ("throughput_per_chip_tok_s", "tpot_ms")
METRICS = tuple(dict.fromkeys(E2E_METRICS + STEADY_METRICS))
# One short label per metric, for every table that shows one (`validate`, `validate --holdout`).
METRIC_LABELS = {
    "output_tok_s_per_chip": "out tok/s/chip",
    "tok_s_per_chip": "tok/s/chip",
    "throughput_per_chip_tok_s": "steady tok/s/chip",
    "tpot_ms": "TPOT",
    "ttft_ms": "TTFT",
    "p99_ttft_ms": "p99 TTFT",
}


@cache
def stored_residuals() -> tuple[dict[str, Any], ...]:
    """The stored residual table: one entry per row and metric, each with its measured and predicted value,
    role and stratum fields. Empty where none has been written."""
    if not RESIDUALS_PATH.exists():
        return ()
    try:
        data = json.loads(RESIDUALS_PATH.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{RESIDUALS_PATH.name}: cannot read ({e})") from None
    return tuple(data.get("rows", []))


HOLDOUT_PATH = VALIDATION_DIR / "residuals-holdout.json"
# The summary's concurrency bands (closed-loop clients); steady rows are a band of their own.
CONC_BANDS = ((8, "conc 1-8"), (64, "conc 9-64"), (512, "conc 65-512"), (10**12, "conc >512"))
MODEL_CLASSES = ("dense", "moe", "mla", "dsa")
# A published weight format as the twin's precision (the two FP4 formats price alike).
FORMAT_PRECISION = {
    "nvfp4": "fp4",
    "mxfp4": "fp4",
    "fp4": "fp4",
    "fp8": "fp8",
    "int8": "int8",
    "bf16": "bf16",
    "int4": "int4",
}


def conc_band(concurrency: int | None, steady: bool = False) -> str | None:
    """A query's concurrency band: ``steady`` for one step of one instance, None where not stated."""
    if steady:
        return "steady"
    if concurrency is None:
        return None
    return next(label for top, label in CONC_BANDS if concurrency <= top)


def isl_band(isl: int | None) -> str | None:
    """The input-length band: the nearest power of two (``ISL 1K``, ``ISL 8K``), None where not stated."""
    if isl is None or isl < 1:
        return None
    n = 2 ** round(math.log2(isl))
    return f"ISL {n // 1024}K" if n >= 1024 else f"ISL {n}"


def model_class(model: Any) -> str:
    """What predicts a model's error: DeepSeek sparse attention (``dsa``), MLA, other MoE, or dense."""
    attention = model.attention
    if getattr(attention, "indexer", None) is not None:
        return "dsa"
    if attention.kind == "mla":
        return "mla"
    return "moe" if model.moe is not None else "dense"


@cache
def stored_holdout_residuals() -> tuple[dict[str, Any], ...]:
    """The stored out-of-group residuals (``validate --holdout KIND --write-residuals``): one entry per row,
    metric and hold-out kind, predicted with constants refitted without the row's group. Empty where none
    has been written."""
    if not HOLDOUT_PATH.exists():
        return ()
    try:
        data = json.loads(HOLDOUT_PATH.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{HOLDOUT_PATH.name}: cannot read ({e})") from None
    return tuple(data.get("rows", []))
