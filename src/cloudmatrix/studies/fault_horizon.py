"""The long-horizon shortcut (`simulate --long-horizon`, docs/faults.md §6): over a horizon of hours or days,
simulate each fault's window in full, request by request, and take the steady stretches between them from a
healthy window of the same simulation, instead of simulating every healthy hour.

- A healthy window from an empty deployment gives the steady decode rate and the warm-up (the time the rate
  takes to reach 95 % of it).
- The faults are drawn (and priced) over the whole horizon as a full run would draw them. Each fault's window
  runs from ``lead`` seconds before it (long enough for the window's own warm-up and the 30-s baseline the
  fault metrics read) to ``settle`` seconds after its instance is back at full capacity; windows that overlap
  are merged, so a fault that strikes a still-degraded instance is simulated with the one before it.
- The horizon's decode tokens are the windows' tokens from their first fault on, the healthy window's over the
  run's own warm-up, and the steady rate times the rest. The faults' timelines and measured figures are the
  windows' own (the same code as a full run), shifted to horizon time; availability is computed from them.

Agreement with a full run where both can be run is tested (tests/studies/test_fault_horizon.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudmatrix.errors import ConfigError
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.fault_report import BACK_SHARE, BASELINE_S, availability
from cloudmatrix.sim.fault_spec import Fault, FaultEvent, FaultsSpec
from cloudmatrix.sim.recovery import Recovery
from cloudmatrix.sim.scenario import Scenario

SETTLE_S = 30.0  # simulated past a fault's return to full capacity (the backlog drains, the rate settles)
MIN_HEALTHY_S = 120.0  # the healthy window's least length
SEED_STRIDE = 1_000_003  # window k runs with seed + k x this (distinct streams, reproducible)


@dataclass(frozen=True)
class Window:
    start_s: float  # horizon time the window's simulation starts at (an empty deployment)
    end_s: float
    faults: tuple[tuple[Fault, Recovery], ...]


def long_horizon(s: Scenario) -> dict[str, Any]:
    """The horizon's summary by the shortcut: steady rate, windows, faults, decode tokens, availability."""
    rate, horizon = _checked(s)
    healthy, warm, steady = _healthy(s, rate)
    lead = 2.0 * warm + BASELINE_S
    probe = Simulation(_copy(s, requests=1, duration_s=horizon, faults=_over(s.faults, horizon)))
    assert probe.faults is not None
    timeline = list(zip(probe.faults.faults, probe.faults.recoveries, strict=True))
    windows = merge(timeline, lead, horizon)
    events: list[dict[str, Any]] = []
    tokens, covered, simulated = 0.0, 0.0, healthy.size
    for k, w in enumerate(windows):
        got, evs = _window(s, rate, w, k + 1)
        first = w.faults[0][0].at_s
        count_from = w.start_s if w.start_s <= 0 else first  # before its first fault: the window's warm-up
        tokens += float(got[int(count_from - w.start_s) :].sum())
        covered += w.end_s - count_from
        simulated += got.size
        events += evs
    head = float(healthy[: int(min(warm, _first_start(windows, horizon)))].sum())  # the run's own warm-up
    head_s = min(warm, _first_start(windows, horizon))
    tokens += head + steady * max(horizon - covered - head_s, 0.0)
    instances = len(probe.decodes)
    return {
        "horizon_s": horizon,
        "steady_decode_tok_s": steady,
        "warm_up_s": warm,
        "lead_s": lead,
        "windows": [{"start_s": w.start_s, "end_s": w.end_s, "faults": len(w.faults)} for w in windows],
        "simulated_s": float(simulated),
        "decode_tokens": tokens,
        "decode_tokens_lost": float(sum(e["decode_tokens_lost"] for e in events)),
        "availability": availability(events, horizon, instances),
        "events": events,
    }


def merge(timeline: list[tuple[Fault, Recovery]], lead: float, horizon: float) -> list[Window]:
    """Each fault's window, from ``lead`` before it to ``SETTLE_S`` after its full capacity, merged where
    they overlap, clipped to the horizon."""
    out: list[Window] = []
    for fault, rec in timeline:
        if fault.at_s >= horizon:
            continue
        start, end = max(fault.at_s - lead, 0.0), min(fault.at_s + back_s(fault, rec) + SETTLE_S, horizon)
        if out and start <= out[-1].end_s:
            last = out[-1]
            out[-1] = Window(last.start_s, max(last.end_s, end), (*last.faults, (fault, rec)))
        else:
            out.append(Window(start, end, ((fault, rec),)))
    return out


def back_s(fault: Fault, rec: Recovery) -> float:
    """Seconds from the fault until its instance is back at full capacity (a slowing fault: its duration)."""
    if fault.duration_s:
        return fault.duration_s
    if rec.cut == "dies" and rec.fenced and rec.reintegrate_after_s is not None:
        return rec.pause_s + rec.reintegrate_after_s + rec.reintegration_pause_s
    return rec.pause_s


def _checked(s: Scenario) -> tuple[float, float]:
    arrivals = s.workload.arrivals
    if s.faults is None:
        raise ConfigError("--long-horizon: the scenario has no faults: section")
    if arrivals.kind == "closed" or arrivals.rate_per_s is None or s.workload.trace:
        raise ConfigError("--long-horizon: needs open-loop arrivals at a rate (workload.arrivals.rate_per_s)")
    horizon = (s.faults.rates.horizon_s if s.faults.rates else None) or s.duration_s
    if horizon is None:
        raise ConfigError("--long-horizon: give faults.rates.horizon_s or the scenario's duration_s")
    return float(arrivals.rate_per_s), float(horizon)


def _healthy(s: Scenario, rate: float) -> tuple[np.ndarray, float, float]:
    """The healthy window's 1-s decode tokens, its warm-up (to 95 % of the steady rate) and the steady rate
    (the mean of its second half)."""
    length = max(MIN_HEALTHY_S, 8.0 * _lifetime_s(s))
    sim = Simulation(_copy(s, requests=math.ceil(rate * length), duration_s=length, faults=None))
    sim.run()
    series = _tokens(sim, length)
    steady = float(series[series.size // 2 :].mean())
    smooth = np.convolve(series, np.ones(5) / 5)[: series.size]
    reached = np.flatnonzero(smooth >= BACK_SHARE * steady)
    warm = float(reached[0] + 1) if reached.size else length / 2
    return series, warm, steady


def _lifetime_s(s: Scenario) -> float:
    """A rough request lifetime for sizing the healthy window: the output at 50 ms a token, 10 s at least."""
    out = s.workload.output
    mean = float(getattr(out, "value", None) or getattr(out, "mean", None) or 256)
    return max(mean * 0.05, 10.0)


def _window(s: Scenario, rate: float, w: Window, k: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    length = w.end_s - w.start_s
    events = [_event(f, w.start_s) for f, _ in w.faults]
    spec = s.faults
    assert spec is not None
    window_spec = FaultsSpec(
        events=events,
        policy=spec.policy,
        requests=spec.requests,
        repair_s=spec.repair_s,
        recovery_stack=spec.recovery_stack,
    )
    sc = _copy(
        s, requests=math.ceil(rate * length), duration_s=length, faults=window_spec, seed=s.seed + k * SEED_STRIDE
    )
    sim = Simulation(sc)
    result = sim.run().to_dict()
    assert result["faults"] is not None
    shifted = [_shift(e, w.start_s) for e in result["faults"]["events"]]
    return _tokens(sim, length), shifted


def _event(f: Fault, offset: float) -> FaultEvent:
    whole_kv = f.kind == "kv_loss" and len(f.dies) > 1  # an instance's KV: no die in the target
    die = "" if whole_kv or not f.dies else f".die.{f.dies[0]}"
    return FaultEvent(
        at_s=f.at_s - offset,
        kind=f.kind,
        target=f"{f.pool}.{f.instance}{die}",
        slowdown=f.slowdown if f.kind == "straggler" else 2.0,
        duration_s=f.duration_s or 60.0,
        **(
            {"plane": f.plane, "bandwidth_factor": f.bandwidth_factor, "latency_factor": f.latency_factor}
            if f.kind == "plane_degradation"
            else {}
        ),  # fmt: skip
    )


def _shift(e: dict[str, Any], offset: float) -> dict[str, Any]:
    keys = ("at_s", "resume_at_s", "until_s", "reintegrate_at_s", "full_capacity_at_s")
    return e | {k: e[k] + offset for k in keys if e.get(k) is not None}


def _tokens(sim: Simulation, length: float) -> np.ndarray:
    """Decode tokens per 1-s bin of a window, each step's tokens at its end."""
    bins = np.zeros(max(int(math.ceil(length)), 1))
    if sim.rec.decode_steps:
        ds = np.array(sim.rec.decode_steps)
        at = np.minimum((ds[:, 1] + ds[:, 2]).astype(np.int64), bins.size - 1)
        np.add.at(bins, at, ds[:, 4])
    return bins


def _first_start(windows: list[Window], horizon: float) -> float:
    return windows[0].start_s if windows else horizon


def _over(spec: FaultsSpec | None, horizon: float) -> FaultsSpec:
    assert spec is not None
    rates = spec.rates.model_copy(update={"horizon_s": horizon}) if spec.rates else None
    return spec.model_copy(update={"rates": rates})


def _copy(s: Scenario, **update: Any) -> Scenario:
    return s.model_copy(update=update)
