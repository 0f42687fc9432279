"""What the planner is asked: system (with what-if hardware overrides), model, workload, SLOs and budget.
Everything here is plain data so a Ray worker can rebuild the same context from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model, model_index
from cloudmatrix.catalog.overrides import apply_hardware_overrides
from cloudmatrix.catalog.sourced import describe_validation_error
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import MAX_REQUESTS, check_number, check_optional, path_exists, read_yaml_file
from cloudmatrix.planner.space import SearchSpace
from cloudmatrix.workload.shape import EXPECTED, parse_shape
from cloudmatrix.workload.spec import LengthSpec, WorkloadSpec
from cloudmatrix.workload.trace import read_trace

TRACE_SUFFIXES = (".csv", ".jsonl", ".json")


@dataclass(frozen=True, kw_only=True)
class PlanWorkload:
    """Mean lengths drive the analytic path; ``spec`` (distributions or a trace) drives the checks. Arrivals
    are not part of it: the planner offers each deployment the rate it was sized for."""

    name: str
    input_len: float
    output_len: float
    spec: WorkloadSpec
    trace_rate_req_s: float | None = None  # a trace's own mean arrival rate (replay is rescaled to the plan)
    trace_requests: int | None = None


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    system: str = "cloudmatrix384"
    model: str = "deepseek-r1"
    workload: str = "4k-256"
    ttft_slo_ms: float = 5000.0
    tpot_slo_ms: float = 50.0
    chips: int | None = None  # chip budget (a partial system); default: the whole system
    top: int = 5  # deployments listed and checked in simulation
    mtp_acceptance: float = 0.7  # an input, never fitted (design.md §3 rule 5); the paper's 70 %
    utilisation: float = 0.9  # pools are planned to run at this fraction of the binding pool's capacity
    hardware_overrides: tuple[str, ...] = ()  # `--set key=value` on catalog hardware values
    space: SearchSpace = field(default_factory=SearchSpace)
    check_requests: int | None = None  # default: enough for a steady window (check.py)
    seed: int = 0
    stack: str | None = None  # serving stack priced; default: the system's published one (presets.yaml)

    def __post_init__(self) -> None:  # the SLOs, budget and search knobs are checked by the search (_budget)
        check_optional("check_requests (--check-requests)", self.check_requests, lo=1, hi=MAX_REQUESTS, integer=True)
        check_number("seed (--seed)", self.seed, lo=0, hi=2**63 - 1, integer=True)


def _fixed(value: float) -> LengthSpec:
    return LengthSpec(kind="fixed", value=max(int(round(value)), 1))


def _mean_len(spec: LengthSpec) -> float:
    """The mean of a length distribution; a capped one is estimated from a seeded sample."""
    if spec.max is None or spec.kind == "fixed":
        return float(spec.typical)
    return float(spec.sample(np.random.default_rng(0), 20000).mean())


def _from_yaml(path: Path) -> PlanWorkload:
    data: Any = read_yaml_file(path, "workload")
    if isinstance(data, dict) and isinstance(data.get("workload"), dict):
        data = data["workload"]  # a whole scenario: take its workload section
    if not isinstance(data, dict):
        raise ConfigError(f"workload {path}: expected a mapping of workload fields")
    data.pop("arrivals", None)  # the planner sets the rate each deployment is sized for
    trace = data.get("trace")
    if isinstance(trace, str) and trace and "\0" not in trace and not Path(trace).is_absolute():
        data["trace"] = str((path.parent / trace).resolve())  # (a NUL is refused when the trace is read)
    try:
        spec = WorkloadSpec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"workload {path.name}: {describe_validation_error(e)}") from None
    if spec.trace:
        return _from_trace(Path(spec.trace), spec.time_scale)
    return PlanWorkload(name=path.name, input_len=_mean_len(spec.input), output_len=_mean_len(spec.output), spec=spec)


def _from_trace(path: Path, time_scale: float = 1.0) -> PlanWorkload:
    trace = read_trace(path)
    span_s = float(trace.timestamp_s[-1] - trace.timestamp_s[0]) * time_scale
    n = len(trace.input_len)
    return PlanWorkload(
        name=path.name,
        input_len=float(trace.input_len.mean()),
        output_len=float(trace.output_len.mean()),
        spec=WorkloadSpec(trace=str(path.resolve()), time_scale=time_scale),
        trace_rate_req_s=(n - 1) / span_s if span_s > 0 else None,
        trace_requests=n,
    )


def parse_workload(name: str) -> PlanWorkload:
    """A shape (``2k-2k``, ``4k-256``, ``INPUT/OUTPUT``), read as every command reads one, else a workload or
    scenario YAML, or a CSV/JSONL trace."""
    lengths = parse_shape(name)
    if lengths is None:
        path = Path(name)
        if not path_exists(path, "workload"):
            raise ConfigError(f"workload {name!r}: expected {EXPECTED}, a workload YAML or a trace")
        return _from_trace(path) if path.suffix in TRACE_SUFFIXES else _from_yaml(path)
    inp, outp = lengths
    spec = WorkloadSpec(input=_fixed(inp), output=_fixed(outp))
    return PlanWorkload(name=name, input_len=float(inp), output_len=float(outp), spec=spec)


def resolved_model(model: str) -> str:
    """A catalog id as is; a config path made absolute, so that Ray workers and written scenarios running
    elsewhere read the same file."""
    if model in model_index() or not path_exists(Path(model), "model config"):
        return model
    return str(Path(model).resolve())


def load_overridden_hardware(system: str, overrides: tuple[str, ...]) -> Hardware:
    """The catalog system with what-if ``--set`` overrides on its values."""
    return apply_hardware_overrides(load_hardware(system), list(overrides))


@cache
def context(system: str, model: str, overrides: tuple[str, ...]) -> tuple[Hardware, ModelSpec]:
    """Hardware and model for a request, cached per process (Ray workers rebuild it once each)."""
    return load_overridden_hardware(system, overrides), load_model(model)
