"""The cost-per-token and power-model inputs (``data/tco.yaml``): the TCO terms shared by every system (life,
PUE, electricity, hosting per rack, chip idle share) and per system the accelerator TDP, host CPU and
interconnect power and a public cloud's price per accelerator-hour. ``--set tco.<key>=value`` overrides."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from cloudmatrix.catalog.overrides import OVERRIDE_SOURCE, parse_value, split_assignment
from cloudmatrix.catalog.sourced import DATA_DIR, Sourced, parse, read_yaml
from cloudmatrix.catalog.strict import Frozen
from cloudmatrix.errors import ConfigError

TCO_PATH = DATA_DIR / "tco.yaml"
TCO_PREFIX = "tco"
EXAMPLE = "tco.kwh_usd=0.08"
# (lowest, lowest excluded, highest) per key; the rest are non-negative (a free cloud or power is a what-if)
BOUNDS = {
    "life_years": (0.0, True, 100.0),
    "pue": (1.0, False, 10.0),
    "chip_idle_share": (0.0, False, 1.0),
    "chip_tdp_w": (0.0, True, 1e5),
}


class SystemPower(Frozen):
    chip_tdp_w: Sourced
    cpu_w: Sourced  # per CPU socket
    network_w: Sourced | None = None  # switches and optics, where a published figure breaks them out
    gpu_hour_usd: Sourced | None = None  # on-demand list price per accelerator-hour


class TcoInputs(Frozen):
    life_years: Sourced
    pue: Sourced
    kwh_usd: Sourced
    hosting_usd_per_rack_month: Sourced
    chip_idle_share: Sourced
    systems: dict[str, SystemPower]


@cache
def _raw() -> dict[str, Any]:
    return dict(read_yaml(TCO_PATH))


def load_tco(assignments: tuple[str, ...] = ()) -> TcoInputs:
    """The catalog's TCO inputs with ``tco.…`` overrides applied (each re-sourced and flagged assumed)."""
    data = _copy(_raw())
    for assignment in assignments:
        _assign(data, assignment)
        parse(TcoInputs, data, f"--set '{assignment}'")  # so an error names the assignment
    return parse(TcoInputs, data, str(TCO_PATH) if not assignments else "--set " + ", ".join(assignments))


def _copy(d: Any) -> Any:
    return {k: _copy(v) for k, v in d.items()} if isinstance(d, dict) else d


def check_printable(assignment: str) -> None:
    """A control character (a newline in a pasted value) would break the one-line error: refused first."""
    if any(ch < " " or ch == "\x7f" for ch in assignment):
        raise ConfigError(f"--set {assignment!r}: a control character; expected key=value, e.g. {EXAMPLE}")


def _assign(data: dict[str, Any], assignment: str) -> None:
    check_printable(assignment)
    parts, raw = split_assignment(assignment, EXAMPLE)
    if parts[0] != TCO_PREFIX or len(parts) < 2:
        raise ConfigError(f"--set '{assignment}': expected a tco.… key, e.g. {EXAMPLE}")
    node = data
    for i, part in enumerate(parts[1:-1], start=1):
        if not isinstance(node.get(part), dict):
            here = ".".join(parts[: i + 1])
            valid = ", ".join(k for k, v in node.items() if isinstance(v, dict) and "value" not in v) or "(none)"
            raise ConfigError(f"--set '{assignment}': unknown section '{here}'; valid: {valid}")
        node = node[part]
    leaf = parts[-1]
    fields = SystemPower.model_fields if len(parts) == 4 else TcoInputs.model_fields
    if leaf not in fields or leaf == "systems":
        valid = ", ".join(k for k in fields if k != "systems")
        raise ConfigError(f"--set '{assignment}': unknown key '{leaf}'; valid keys: {valid}")
    value = parse_value(raw, assignment)
    lo, lo_open, hi = BOUNDS.get(leaf, (0.0, False, math.inf))
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < lo or (lo_open and value == lo) or value > hi:
        want = f"a number {'>' if lo_open else '>='} {lo:g}" + ("" if hi == math.inf else f" and <= {hi:g}")
        raise ConfigError(f"--set '{assignment}': '{'.'.join(parts)}' expects {want}, got {raw.strip()!r}")
    node[leaf] = {"value": value, "source": OVERRIDE_SOURCE + assignment, "assumed": True}
