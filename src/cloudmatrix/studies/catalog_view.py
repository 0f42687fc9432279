"""Catalog listings with derived figures, for `cloudmatrix catalog`."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

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


def scenario_key_rows() -> list[dict[str, Any]]:
    """Every key ``--set`` takes on a scenario (dotted paths through its sections), with its type and the
    default of a scenario that does not set it, from the scenario schema itself (so the list cannot fall
    behind it). A section (``decode``, ``workload.arrivals``) is set whole by its keys."""
    from cloudmatrix.sim.scenario import Scenario

    rows: list[dict[str, Any]] = []
    _walk(Scenario, "", rows, None)
    return rows


def _walk(model: type[BaseModel], prefix: str, rows: list[dict[str, Any]], instance: BaseModel | None) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if instance is not None:
            value = getattr(instance, name)
        else:
            value = None if field.is_required() else field.get_default(call_default_factory=True)
        nested = [a for a in (get_args(field.annotation) or (field.annotation,)) if _is_model(a)]
        if nested:
            rows.append({"key": key, "type": "section", "default": "set" if value is not None else "absent"})
            _walk(nested[0], f"{key}.", rows, value if isinstance(value, BaseModel) else None)
            continue
        default = "required" if instance is None and field.is_required() else "null" if value is None else str(value)
        rows.append({"key": key, "type": _type_name(field.annotation), "default": default})


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return "|".join(str(a) for a in args)
    if args:
        named = " or ".join(_type_name(a) for a in args if a is not type(None))
        return named + (" or null" if type(None) in args else "")
    return getattr(annotation, "__name__", str(annotation))


def hardware_key_rows(system: str = "cloudmatrix384") -> list[dict[str, Any]]:
    """Every number a what-if ``--set`` (plan, compare) may change on a system's hardware: the
    dotted ``system.…`` / ``chip.…`` path and its catalog value (a sourced number is set by its path)."""
    hw = load_hardware(system)
    rows: list[dict[str, Any]] = []
    for section in ("system", "chip"):
        _numbers(getattr(hw, section).model_dump(), section, rows)
    return rows


def _numbers(data: Any, key: str, rows: list[dict[str, Any]]) -> None:
    if isinstance(data, dict) and "value" in data and "source" in data:
        rows.append({"key": key, "type": "number (x2 multiplies)", "default": f"{data['value']:g}"})
    elif isinstance(data, dict):
        for name, value in data.items():
            _numbers(value, f"{key}.{name}", rows)
    elif isinstance(data, int | float) and not isinstance(data, bool):
        rows.append({"key": key, "type": "number (x2 multiplies)", "default": f"{data:g}"})
