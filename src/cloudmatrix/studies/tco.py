"""Cost and energy per token at a system's operating point. The TCO mode: capital amortised over a stated
life, hosting per rack, and the power drawn at that load x PUE x $/kWh, over the output tokens the system
serves. The cloud mode: a public cloud's list price per accelerator-hour instead. The power model: each
accelerator from idle to TDP by its load (the share of each step at speed of light, i.e. the utilisation of
compute or memory bandwidth), plus host CPUs, interconnect (switches, optics) and the rest of the catalog's
all-in power as a fixed draw. Inputs: ``catalog/data/tco.yaml`` and the system's price, power and racks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.overrides import apply_hardware_overrides, split_assignment
from cloudmatrix.catalog.presets import hardware_id
from cloudmatrix.catalog.tco import TCO_PREFIX, TcoInputs, check_printable, load_tco
from cloudmatrix.errors import ConfigError
from cloudmatrix.studies.compare import Conditions, Progress, SystemResult, compare_dict

HOURS_PER_YEAR = 8766.0  # 365.25 days
MONTHS_PER_YEAR = 12
# What a `--set system.…` may change in `compare`: its cost inputs. Performance what-ifs are `plan --set`'s.
SYSTEM_COST_KEYS = ("system.price_usd", "system.power_kw", "system.racks")


@dataclass(frozen=True, kw_only=True)
class PowerModel:
    chips: int
    chip_tdp_w: float
    chip_idle_share: float
    cpus: int
    cpu_w: float
    network_w: float
    fixed_w: float  # the rest of the all-in power: memory, fans, NICs, power conversion

    def draw_w(self, load: float) -> float:
        """IT power (W) with every accelerator at ``load`` (0 idle, 1 TDP)."""
        chip = self.chip_tdp_w * (self.chip_idle_share + (1 - self.chip_idle_share) * load)
        return self.chips * chip + self.cpus * self.cpu_w + self.network_w + self.fixed_w


def power_model(hw: Hardware, tco: TcoInputs) -> PowerModel | None:
    """The system's power model, its fixed remainder taken so that full load draws the catalog's all-in
    power_kw; None where the catalog has no breakdown for the system."""
    inputs = tco.systems.get(hw.system.id.removesuffix("+what-if"))
    if inputs is None:
        return None
    chips, cpus = hw.system.num_chips, hw.system.num_cpus
    network = inputs.network_w.value if inputs.network_w else 0.0
    parts = chips * inputs.chip_tdp_w.value + cpus * inputs.cpu_w.value + network
    fixed = hw.system.power_kw.value * 1e3 - parts
    if fixed < 0:
        raise ConfigError(
            f"{hw.system.id}: power_kw {hw.system.power_kw.value:,.1f} is below its parts' {parts / 1e3:,.1f} kW "
            f"({chips} x {inputs.chip_tdp_w.value:g} W accelerators, {cpus} x {inputs.cpu_w.value:g} W CPUs, "
            f"{network:,.0f} W interconnect); raise system.power_kw or lower tco.systems.… TDP"
        )
    return PowerModel(chips=chips, chip_tdp_w=inputs.chip_tdp_w.value, chip_idle_share=tco.chip_idle_share.value,
                      cpus=cpus, cpu_w=inputs.cpu_w.value, network_w=network, fixed_w=fixed)  # fmt: skip


def economics(hw: Hardware, tco: TcoInputs, tok_s_per_system: float, load: float) -> dict[str, Any]:
    """$ per million output tokens (TCO and cloud list price), J per output token and output tok/s per MW
    of facility power, at a system's operating point."""
    pm = power_model(hw, tco)
    capital = hw.system.price_usd.value / (tco.life_years.value * HOURS_PER_YEAR)
    hosting = hw.system.racks.value * tco.hosting_usd_per_rack_month.value * MONTHS_PER_YEAR / HOURS_PER_YEAR
    mtok_per_hour = tok_s_per_system * 3600 / 1e6
    out: dict[str, Any] = {"capital_usd_h": capital, "hosting_usd_h": hosting, "load": load}
    if pm is None:
        out |= {"power_kw": None, "energy_usd_h": None, "usd_per_mtok": None, "j_per_token": None,
                "output_tok_s_per_mw": None, "note": "no power breakdown in catalog/data/tco.yaml"}  # fmt: skip
    else:
        draw = pm.draw_w(load)
        energy = draw / 1e3 * tco.pue.value * tco.kwh_usd.value
        out |= {
            "power_kw": draw / 1e3,
            "energy_usd_h": energy,
            "usd_per_mtok": (capital + hosting + energy) / mtok_per_hour,
            "j_per_token": draw / tok_s_per_system,
            "output_tok_s_per_mw": tok_s_per_system / (draw * tco.pue.value / 1e6),
        }
    listed = tco.systems.get(hw.system.id.removesuffix("+what-if"))
    price = listed.gpu_hour_usd.value if listed and listed.gpu_hour_usd else None
    out["usd_per_mtok_cloud"] = None if price is None else price * hw.system.num_chips / mtok_per_hour
    return out


def split_overrides(assignments: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str | None, list[str]]]:
    """``--set`` values for `compare`: ``tco.…`` keys, and ``[SYSTEM:]system.price_usd|power_kw|racks`` per
    system (None: every system)."""
    tco: list[str] = []
    systems: dict[str | None, list[str]] = {}
    for a in assignments:
        check_printable(a)
        scope, sep, rest = a.partition(":")
        target, assignment = (scope.strip(), rest) if sep and "=" not in scope else (None, a)
        parts, _ = split_assignment(assignment, "tco.kwh_usd=0.08")
        if parts[0] == TCO_PREFIX:
            tco.append(assignment)
        elif ".".join(parts) in SYSTEM_COST_KEYS:
            systems.setdefault(target, []).append(assignment)
        else:
            raise ConfigError(
                f"--set '{a}': compare takes tco.… keys and [SYSTEM:]{', '.join(SYSTEM_COST_KEYS)}; "
                "performance what-ifs are plan's --set"
            )
    return tuple(tco), systems


def system_hardware(system: str, overrides: dict[str | None, list[str]]) -> Hardware:
    hw = load_hardware(hardware_id(system))
    return apply_hardware_overrides(hw, overrides.get(None, []) + overrides.get(system, []))


def priced(r: SystemResult, hw: Hardware, tco: TcoInputs) -> SystemResult:
    """A feasible result with its economics, and per kW / per $M on the (possibly overridden) price and power."""
    if not r.feasible:
        return r
    per_system = r.output_tok_s_per_system
    return dataclasses.replace(
        r,
        output_tok_s_per_kw=per_system / hw.system.power_kw.value,
        output_tok_s_per_musd=per_system / (hw.system.price_usd.value / 1e6),
        economics=economics(hw, tco, per_system, r.utilisation),
    )


def compare_priced(
    systems: list[str], c: Conditions, assignments: tuple[str, ...] = (), progress: Progress | None = None
) -> tuple[list[SystemResult], dict[str, Any]]:
    """``compare_dict`` with each system's cost and energy per token (overrides checked before any pricing)."""
    tco_set, system_set = split_overrides(assignments)
    unknown = [s for s in system_set if s is not None and s not in systems]
    if unknown:
        raise ConfigError(f"--set '{unknown[0]}:…': '{unknown[0]}' is not among the systems compared")
    tco = load_tco(tco_set)
    hws = {s: system_hardware(s, system_set) for s in systems}
    for hw in hws.values():
        power_model(hw, tco)  # an inconsistent power breakdown fails before the long part
    results, d = compare_dict(systems, c, progress)
    results = [priced(r, hws[r.system], tco) for r in results]
    d["systems"] = [r.to_dict() for r in results]
    d["tco"] = tco_summary(tco, assignments)
    return results, d


def tco_summary(tco: TcoInputs, assignments: tuple[str, ...]) -> dict[str, Any]:
    keys = ("life_years", "pue", "kwh_usd", "hosting_usd_per_rack_month", "chip_idle_share")
    return {k: getattr(tco, k).value for k in keys} | {"overrides": list(assignments)}


def plan_economics(row: dict[str, Any], hw: Hardware, tco: TcoInputs, input_len: float, output_len: float) -> dict:
    """A planned deployment's cost and energy per token. Each pool's chips are loaded at their saturated
    step's speed-of-light share times the pool's utilisation at the planned rate (demand over capacity);
    per-token figures do not depend on how much of the system the deployment takes, so the slice is priced
    as the whole system running at its rate per chip."""
    loaded = 0.0
    for pool, tokens in (("prefill", input_len), ("decode", max(output_len - 1, 1))):
        p = row[pool]
        capacity = p["instances"] * p["chips"] * p["tok_s_per_chip"]
        rho = min(1.0, row["rate_req_s"] * tokens / capacity) if capacity > 0 else 0.0
        loaded += p["instances"] * p["chips"] * p["busy"] * rho
    load = loaded / row["chips"]
    return economics(hw, tco, row["output_tok_s_per_chip"] * hw.system.num_chips, load)
