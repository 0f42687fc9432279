"""What-if overrides: ``a.b.c=value`` assignments on nested data (scenario files) and on a loaded ``Hardware``
(``chip.die.hbm_gb=192``, ``system.planes.scale_up.bw_gb_s_per_die=x2``), re-validated through pydantic
(``catalog/record_schema.py``)."""

from __future__ import annotations

import math
import re
import types
from typing import Any, Union, get_args, get_origin

from pydantic import ValidationError

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.record import Record
from cloudmatrix.catalog.sourced import Sourced, describe_validation_error
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import parse_yaml

WHAT_IF_SUFFIX = "+what-if"  # appended to the ids of a modified system/chip so reports show the change
OVERRIDE_SOURCE = "what-if override: "
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
MULTIPLY_PREFIXES = ("x", "*")  # `x2` / `*1.5`: multiply the current value
# Hardware numbers are bandwidths, rates, capacities and counts that the cost model divides by, so an
# override must be positive; only these fixed overheads (latencies, launches, graph start-ups and tasks,
# setup, reserve) may be 0.
ZERO_ALLOWED = frozenset(
    ("latency_us", "latency_us_local", "launch_us", "base_latency_us", "sync_us_per_doubling", "warm_setup_s")
    + ("graph_launch_us", "graph_task_us", "kernel_floor_us", "runtime_reserve_gb", "attention_overlap")
    + ("attention_floor_us",)
)


def split_assignment(assignment: str, example: str) -> tuple[list[str], str]:
    """``'a.b.c=value'`` -> (``['a', 'b', 'c']``, ``'value'``); ``example`` is shown when it is malformed."""
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set '{assignment}': expected key=value, e.g. {example}")
    return parts, raw


def parse_value(raw: str, assignment: str) -> Any:
    """The right-hand side read as YAML, so ``64`` is a number, ``true`` a bool and ``{kind: x}`` a mapping
    (within the bounds of every YAML input: nesting, and aliases expanded)."""
    if len(raw) <= 18 and raw.isascii() and raw.isdigit() and (raw == "0" or raw[0] != "0"):
        return int(raw)  # a plain decimal integer, as YAML reads it, without importing PyYAML (~20 ms)
    value = parse_yaml(raw, f"--set '{assignment}': value")
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)  # YAML 1.1 reads `1e3` as a string; users mean the number
    return value


def apply_assignment(data: dict[str, Any], assignment: str, example: str) -> None:
    """Set ``a.b.c=value`` in nested ``data`` in place, creating missing sections. Validation is the
    caller's (the schema decides which keys exist); ``example`` is a valid assignment for the error text."""
    parts, raw = split_assignment(assignment, example)
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set '{assignment}': '{part}' is not a section")
        node = child
    node[parts[-1]] = parse_value(raw, assignment)


def apply_hardware_overrides(hw: Hardware, assignments: list[str]) -> Hardware:
    """A new ``Hardware`` with ``--set``-style overrides applied to its system and chip. Paths follow the
    model (``system.…``, ``chip.…``); a leading ``x`` or ``*`` multiplies the current value. A number set
    on a sourced value keeps its provenance honest: the source becomes the override and it is flagged
    assumed. ``hw`` (possibly a cached catalog entry) is never mutated."""
    if not assignments:
        return hw
    data = hw.model_dump()
    touched = {"system"}  # the system is always marked, so every report shows it was modified
    for assignment in assignments:
        parts, raw = split_assignment(assignment, "system.planes.scale_up.bw_gb_s_per_die=x2")
        _assign(data, parts, raw, assignment)
        touched.add(parts[0])
        _validate(data, assignment)  # after each one, so an error names the assignment that caused it
    if "chip" in touched and not data["chip"].get("kernel_curves_from"):
        # the renamed chip keeps its measured kernel curves (shares of its peak, whatever the what-if scales)
        data["chip"]["kernel_curves_from"] = hw.chip.id
        data["chip"]["kernel_curves_source"] = f"what-if of {hw.chip.id}: its measured kernel curves"
    for section in touched:
        if not data[section]["id"].endswith(WHAT_IF_SUFFIX):
            data[section]["id"] += WHAT_IF_SUFFIX
            data[section]["name"] += " (what-if)"
    if "chip" in touched:
        data["system"]["chip"] = data["chip"]["id"]
    return _validate(data, ", ".join(assignments))


def _validate(data: dict[str, Any], assignment: str) -> Hardware:
    try:
        return Hardware.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"--set '{assignment}': {describe_validation_error(e)}") from None


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record)


def _assign(data: dict[str, Any], parts: list[str], raw: str, assignment: str) -> None:
    """Walk ``parts`` through the data and the model's field types together, then set the leaf."""
    tp: Any = Hardware
    node: Any = data
    for i, part in enumerate(parts):
        here = ".".join(parts[:i]) or "<hardware>"
        base = _strip_optional(tp)
        if _is_model(base) and base is not Sourced:
            fields = base.field_types()
            if part not in fields:
                valid = ", ".join(fields)
                raise ConfigError(f"--set '{assignment}': unknown key '{part}' under '{here}'; valid keys: {valid}")
            tp = fields[part]
        elif get_origin(base) is dict:
            # Open mappings (peak_tflops, published_totals) may gain a key, e.g. FP8 units on a 910C.
            if part not in node and (i < len(parts) - 1 or _multiplier(raw) is not None):
                valid = ", ".join(node) or "(none)"
                raise ConfigError(f"--set '{assignment}': unknown key '{part}' under '{here}'; valid keys: {valid}")
            tp = get_args(base)[1]
        else:
            raise ConfigError(f"--set '{assignment}': '{here}' is a value, not a section; set it directly")
        if i < len(parts) - 1:
            if node.get(part) is None:
                path = ".".join(parts[: i + 1])
                raise ConfigError(f"--set '{assignment}': '{path}' is not set on this system")
            node = node[part]
    node[parts[-1]] = _leaf(_strip_optional(tp), node.get(parts[-1]), raw, ".".join(parts), assignment)


def _multiplier(raw: str) -> float | None:
    text = raw.strip()
    if not text.startswith(MULTIPLY_PREFIXES):
        return None
    try:
        return float(text[1:])
    except ValueError:
        return None


def _leaf(tp: Any, current: Any, raw: str, path: str, assignment: str) -> Any:
    """The new value for a leaf of type ``tp``: a Sourced (number, re-sourced), a number, or anything else
    pydantic validates (strings, flags, whole sections given as YAML mappings)."""
    factor = _multiplier(raw)
    old = current["value"] if tp is Sourced and isinstance(current, dict) else current
    if factor is not None:
        if not _is_number(old):
            raise ConfigError(f"--set '{assignment}': cannot multiply '{path}' (current value {old!r})")
        value: Any = old * factor
    else:
        value = parse_value(raw, assignment)
    numeric = tp is Sourced or _is_number(old)
    zero_ok = path.rsplit(".", 1)[-1] in ZERO_ALLOWED
    if numeric and not (_is_number(value) and math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        kind = "non-negative" if zero_ok else "positive"
        raise ConfigError(f"--set '{assignment}': '{path}' expects a {kind} number, got {raw.strip()!r}")
    if tp is Sourced:
        return {"value": value, "source": OVERRIDE_SOURCE + assignment, "assumed": True}
    return value


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)
