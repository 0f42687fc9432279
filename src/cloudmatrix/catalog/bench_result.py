"""A serving benchmark's own result file as a validation row: the JSON `vllm bench serve --save-result` (or
SGLang's `bench_serving`) writes, with a small sidecar YAML beside it (``NAME.sidecar.yaml`` for
``NAME.json``) naming what the file does not: system, model, stack, weight/activation/KV formats, the layout
per role, MTP, and the workload's lengths. The measured figures come from the file: TTFT and TPOT medians
(as the InferenceMAX adapter reads them), p99 TTFT, and output and total tokens/s per chip over the
sidecar's chips; the run's concurrency and request count too, unless the sidecar states them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cloudmatrix.catalog.validation import ValidationRow, describe_row_error
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import MAX_YAML_BYTES, parse_json, path_exists, read_text, read_yaml_file

SIDECAR = ".sidecar.yaml"
REQUIRED = ("completed", "median_ttft_ms", "median_tpot_ms", "output_throughput")
TOTAL_KEYS = ("total_token_throughput", "total_throughput")  # vLLM's, SGLang's


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.stem + SIDECAR)


def read_bench_result(path: Path) -> list[ValidationRow]:
    """The result file at ``path`` and its sidecar as one end-to-end row."""
    result = parse_json(read_text(path, "benchmark result", MAX_YAML_BYTES), str(path))
    if not isinstance(result, dict):
        raise ConfigError(f"{path.name}: expected a benchmark result object, got {type(result).__name__}")
    missing = [k for k in REQUIRED if not _positive(result.get(k))]
    if missing:
        raise ConfigError(
            f"{path.name}: {missing[0]}: expected a positive number (a vllm bench serve or SGLang bench_serving "
            f"result), got {result.get(missing[0])!r}"
        )
    side_path = sidecar_of(path)
    if not path_exists(side_path, "sidecar"):
        raise ConfigError(
            f"{path.name}: no sidecar {side_path.name} beside it to name the system, model, stack, formats and "
            "layout (see docs/validation.md)"
        )
    side = read_yaml_file(side_path, "sidecar")
    if not isinstance(side, dict):
        raise ConfigError(f"{side_path.name}: expected a mapping of the row's fields")
    row = _row(path, result, side)
    try:
        return [ValidationRow.model_validate(row)]
    except ValidationError as e:
        raise ConfigError(f"{side_path.name}: {describe_row_error(e, {'rows': [row]})}") from None


def _row(path: Path, result: dict[str, Any], side: dict[str, Any]) -> dict[str, Any]:
    chips = sum(
        int(layout.get("instances", 1)) * int(layout.get("chips", 0))
        for role in ("prefill", "decode", "aggregated")
        if isinstance(layout := side.get(role), dict)
        and _whole(layout.get("instances", 1))
        and _whole(layout.get("chips"))
    )
    if chips == 0:
        raise ConfigError(f"{path.name}'s sidecar: no prefill/decode or aggregated layout with whole chips")
    per_chip = chips
    measured: dict[str, float] = {
        "ttft_ms": float(result["median_ttft_ms"]),
        "tpot_ms": float(result["median_tpot_ms"]),
        "output_tok_s_per_chip": float(result["output_throughput"]) / per_chip,
    }
    if _positive(result.get("p99_ttft_ms")):
        measured["p99_ttft_ms"] = float(result["p99_ttft_ms"])
    total = next((result[k] for k in TOTAL_KEYS if _positive(result.get(k))), None)
    if total is not None:
        measured["tok_s_per_chip"] = float(total) / per_chip
    workload = dict(side.get("workload") or {})
    workload.setdefault("num_requests", result["completed"])
    if "concurrency" not in workload and "rate_per_s" not in workload:  # a finite rate with a cap is both
        if _whole(result.get("max_concurrency")):
            workload["concurrency"] = result["max_concurrency"]
        if _positive(result.get("request_rate")):
            workload["rate_per_s"] = result["request_rate"]
    return {
        "id": path.stem,
        "source": path.name,
        "series": side.get("id", path.stem),
        **side,
        "kind": "e2e",
        "workload": workload,
        "measured": measured,
    }


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
