"""Synthetic stored residuals for the interval and hold-out tests: one predicted, answered TPOT row of an MoE
model at FP8 on vLLM, ISL 1K and 4 clients, with any field replaced."""

from __future__ import annotations

import math
from typing import Any

from cloudmatrix.catalog.hardware import chip_family


def residual(system: str = "hgx-b200", ratio: float = 1.0, **fields: Any) -> dict[str, Any]:
    """A residual of ``system`` measured at ``ratio`` times its prediction of 10 ms; ``fields`` replace any."""
    return {
        "kind": "series",
        "system": system,
        "family": chip_family(system),
        "stack": "vllm",
        "model_class": "moe",
        "weights": "fp8",
        "isl": 1024,
        "isl_band": "ISL 1K",
        "concurrency": 4,
        "band": "conc 1-8",
        "metric": "tpot_ms",
        "role": "predicted",
        "status": "ok",
        "measured": 10.0 * ratio,
        "predicted": 10.0,
    } | fields


def spread_rows(
    kind: str,
    system: str,
    stack: str,
    ratio: float,
    spread: float,
    *,
    tag: str,
    n: int = 12,
    series: int = 3,
    **fields: Any,
) -> list[dict[str, Any]]:
    """``n`` rows of one cell from ``series`` series named after ``tag``, measured / predicted spread evenly over
    ``spread`` (in ln) about ``ratio``; the series hold-out's priced with fitted host times, every other kind's
    without."""
    return [
        residual(
            system,
            math.exp(spread * (i / (n - 1) - 0.5)) * ratio,
            kind=kind,
            id=f"{tag}-{i}",
            series=f"{tag}-s{i % series}",
            stack=stack,
            model="gpt-oss-120b",
            host_times="fitted" if kind == "series" else "unfitted",
        )
        | fields
        for i in range(n)
    ]
