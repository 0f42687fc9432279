"""Published deployments per system (``data/presets/presets.yaml``): the prefill and decode instances, the
precision and the serving stack each system's published numbers were measured under."""

from __future__ import annotations

from functools import cache
from typing import Any

from cloudmatrix.catalog.sourced import DATA_DIR, read_yaml


@cache
def presets() -> dict[str, dict[str, Any]]:
    return dict(read_yaml(DATA_DIR / "presets" / "presets.yaml"))


@cache
def afd_presets() -> dict[str, dict[str, Any]]:
    """Attention-FFN disaggregated decode deployments (``data/presets/afd.yaml``), each on a base system."""
    return dict(read_yaml(DATA_DIR / "presets" / "afd.yaml"))


def hardware_id(name: str) -> str:
    """The system an id runs on: an AFD preset's base system, else the id itself."""
    return str(afd_presets().get(name, {}).get("system", name))


def default_stack(system: str) -> str | None:
    """The serving stack of a system's published deployment; None where it has none. What-if variants
    (ids suffixed ``+what-if``) keep their base system's; an AFD preset names its own."""
    stack = (presets().get(system.removesuffix("+what-if")) or afd_presets().get(system, {})).get("stack")
    return None if stack is None else str(stack)
