"""Catalog listings with derived figures, for `cloudmatrix catalog`."""

from __future__ import annotations

from typing import Any

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.models import load_model, model_ids


def system_rows() -> list[dict[str, Any]]:
    rows = []
    for sid in system_ids():
        hw = load_hardware(sid)
        rows.append({"id": sid, "name": hw.system.name, "chip": hw.chip.id, **hw.totals()})
    return rows


def model_rows() -> list[dict[str, Any]]:
    rows = []
    for mid in model_ids():
        m = load_model(mid)
        experts = f"{m.moe.num_routed}+{m.moe.num_shared} top-{m.moe.top_k}" if m.moe else "dense"
        rows.append(
            {
                "id": mid,
                "model_type": m.model_type,
                "attention": m.attention.kind,
                "layers": m.num_layers,
                "experts": experts,
                "total_params_b": m.total_params() / 1e9,
                "active_params_b": m.active_params() / 1e9,
                "kv_bytes_per_token_bf16": m.kv_bytes_per_token(2.0),
                "mtp_layers": m.mtp_layers,
            }
        )
    return rows
