"""Open-loop arrivals taken in batches (sim/arrivals.py) give the same run, to the bit, as one event per
arrival (the path a run with an observer still takes): every built-in scenario, idle and bursty rates, a run
cut by ``duration_s``, the cache-aware router, and traces whose arrivals share timestamps."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.sim.arrivals import clock_times
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.scenario import SCENARIO_DIR, Scenario, load_scenario

from .same_run import assert_same_run

BUILT_IN = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def _assert_same_run(scenario: Scenario) -> None:
    batched = Simulation(scenario)
    reference = Simulation(scenario, observer=lambda _sim: None)  # an observer reads the queues: one event each
    got, want = batched.run(), reference.run()
    assert batched.open is not None or scenario.aggregated or scenario.faults
    assert reference.open is None
    assert_same_run(got, want)


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_scenarios(name: str) -> None:
    _assert_same_run(load_scenario(name, ["requests=400"]))


@pytest.mark.parametrize(
    "overrides",
    [
        ["workload.arrivals.rate_per_s=6", "requests=60"],  # prefill instances mostly asleep
        ["workload.arrivals={kind: gamma, rate_per_s: 100, cv: 4}", "requests=600"],
        ["duration_s=8"],
        ["duration_s=8", "workload.arrivals.rate_per_s=7"],
        ["prefill.router=cache-aware", "workload.reuse={fraction: 0.5, groups: 4}", "requests=400"],
        ["decode.instances=2", "decode.chips=16", "decode.ep=32", "prefill.instances=2", "requests=400"],
    ],
)
def test_variants(overrides: list[str]) -> None:
    _assert_same_run(load_scenario("cm384-paper", overrides))


@pytest.mark.parametrize("cut", [None, 1.0, 2.25])
def test_traces_with_shared_timestamps(tmp_path: Path, cut: float | None) -> None:
    """Bursts at one timestamp, the first at 0, a cut at a timestamp: ties keep the event engine's order."""
    rows = ["timestamp,input_length,output_length"]
    rng = np.random.default_rng(4)
    t = 0
    for _ in range(150):
        t += int(rng.choice([0, 0, 0, 250, 1000]))
        rows.append(f"{t},{int(rng.integers(100, 6000))},{int(rng.integers(1, 300))}")
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join(rows) + "\n")
    overrides = [f"workload.trace={trace}", "workload.time_scale=0.001"]
    _assert_same_run(load_scenario("cm384-paper", overrides + ([f"duration_s={cut}"] if cut else [])))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), max_size=60), st.booleans())
def test_clock_times_are_the_clock_sums(times: list[float], ordered: bool) -> None:
    """Each arrival's time is the previous one's plus the gap, as the clock sums a timeout, never earlier."""
    values = sorted(times) if ordered else times
    now, want = 0.0, []
    for t in values:
        if t > now:
            now = now + (t - now)
        want.append(now)
    assert clock_times(np.array(values, dtype=np.float64)).tolist() == want
