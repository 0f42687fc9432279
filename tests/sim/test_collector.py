"""The cycle collector is paused only inside a whole run and comes back on however the run ends."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import nullcontext

import numpy as np
import pytest

from cloudmatrix.serving.requests import RequestTable
from cloudmatrix.sim import engine
from cloudmatrix.sim.collector import collector_paused
from cloudmatrix.sim.engine import Simulation, simulate
from cloudmatrix.sim.scenario import load_scenario


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


@pytest.mark.parametrize("pause", [True, False])
def test_pause_holds_inside_and_restores_after(pause: bool) -> None:
    with collector_paused(pause):
        assert gc.isenabled() is not pause
    assert gc.isenabled()


def test_restored_when_the_block_raises() -> None:
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_left_off_when_it_was_off() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_run_pauses_it_and_switches_it_back_on() -> None:
    seen: list[bool] = []
    sim = Simulation(load_scenario(None, ["requests=200"]))
    sim.rec.prefill_batch = lambda *row: seen.append(gc.isenabled())
    sim.run()
    assert seen and not any(seen)
    assert gc.isenabled()


def test_results_do_not_depend_on_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = load_scenario(None, ["requests=1500"])
    paused = simulate(scenario)
    monkeypatch.setattr(engine, "collector_paused", lambda pause: nullcontext())  # collecting all along
    collected = simulate(scenario)
    assert json.dumps(paused.to_dict(), sort_keys=True) == json.dumps(collected.to_dict(), sort_keys=True)
    assert paused.recorder.decode_steps == collected.recorder.decode_steps
    for column in RequestTable.STAMPS:
        np.testing.assert_array_equal(getattr(paused.table, column), getattr(collected.table, column))
