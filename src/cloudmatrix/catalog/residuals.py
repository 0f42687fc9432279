"""The validation corpus's metric ids and the stored residual table (``validate --write-residuals``), apart
from the corpus schema so that an answer's interval reads them without loading that schema."""

from __future__ import annotations

import json
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
