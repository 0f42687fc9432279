"""The terms of a comparison (`compare`, `plan --versus`, the sweep, the report): which systems, the
conditions every system is held to, and one system's result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudmatrix.catalog.hardware import system_ids
from cloudmatrix.catalog.presets import afd_presets, presets
from cloudmatrix.errors import ConfigError, UnknownIdError
from cloudmatrix.inputs import check_number, check_optional

Progress = Callable[[int, int], None]


def system_list(systems: str | Sequence[str] | None) -> list[str]:
    """``--system a,b --system c`` (or the older ``--systems a,b``) as ids, each once in the order given, all
    known to the catalog (so there are at most as many as it has, checked before any is priced); by default
    every system with a published (or assumed) preset."""
    given = [systems] if isinstance(systems, str) else list(systems or [])
    if not any(given):
        return list(presets())
    ids = list(dict.fromkeys(s.strip() for item in given for s in item.split(",")))
    known = [*system_ids(), *afd_presets()]
    if len(ids) > len(known):
        raise ConfigError(f"--system: {len(ids):,} distinct ids; expected at most {len(known)}, the catalog's systems")
    for s in ids:
        if s not in known:
            raise UnknownIdError("system", s, list(known)) if s else ConfigError("--system: an empty id; expected ids")
    return ids


@dataclass(frozen=True, kw_only=True)
class Conditions:
    model: str
    input_len: int
    output_len: int
    tpot_slo_ms: float
    ttft_slo_ms: float | None = None
    mtp: int = 1
    mtp_acceptance: float = 0.7
    target_rate_req_s: float | None = None
    stack: str | None = None  # one serving stack for every system; default: each system's published one

    def __post_init__(self) -> None:
        check_number("tpot_slo (--tpot-slo, ms)", self.tpot_slo_ms, lo=0, lo_open=True, hi=1e6)
        check_optional("ttft_slo (--ttft-slo, ms)", self.ttft_slo_ms, lo=0, lo_open=True, hi=1e7)
        check_number("mtp (--mtp)", self.mtp, lo=0, hi=8, integer=True)
        check_number("mtp_acceptance (--mtp-acceptance)", self.mtp_acceptance, lo=0, hi=1)
        check_optional("target_rate (--target-rate, req/s)", self.target_rate_req_s, lo=0, lo_open=True, hi=1e9)


@dataclass(frozen=True, kw_only=True)
class SystemResult:
    system: str
    deployment: str
    precision: str
    assumed_deployment: bool = False
    mode: str = "disaggregated"  # or "aggregated" (co-located, chunked prefill)
    alternatives: dict[str, float] = field(default_factory=dict)  # mode -> output tok/s per chip under the SLO
    feasible: bool
    reason: str = ""
    batch_per_chip: float = 0.0
    tpot_ms: float = 0.0
    ttft_ms: float = 0.0
    prefill_tok_s_per_chip: float = 0.0
    decode_tok_s_per_chip: float = 0.0
    output_tok_s_per_chip: float = 0.0  # prefill and decode pools sized for the workload
    output_tok_s_per_system: float = 0.0
    output_tok_s_per_kw: float = 0.0
    output_tok_s_per_musd: float = 0.0
    chips_for_target: int | None = None
    why: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)  # (tok/s per user, tok/s per chip)
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)  # headline figure -> measured-error interval
    stack: str | None = None  # the serving stack priced
    not_run: bool = False  # the stack asked for has no build for this system's vendor: nothing priced
    utilisation: float = 0.0  # chip-weighted share of each step at speed of light (the power model's load)
    economics: dict[str, Any] = field(default_factory=dict)  # $ / Mtok, J/token (studies/tco.py)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}
