"""Synthetic stored residuals for the interval and hold-out tests: one predicted, answered TPOT row of an MoE
model at FP8 on vLLM, ISL 1K and 4 clients, with any field replaced."""

from __future__ import annotations

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
