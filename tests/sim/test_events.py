"""Light events take the place in SimPy's queue that a Timeout or a process would: the same order on ties,
with or without SimPy events mixed in, and a sleeping loop resumes after the events already due."""

from collections.abc import Callable, Generator

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.sim.events import Sleeper, call_later, call_urgent, run_until


def _run(delays: list[float], light: bool) -> list[tuple[float, int]]:
    env, seen = simpy.Environment(), []

    def at(tag: int, delay: float) -> None:
        if light and tag % 2:
            call_later(env, delay, lambda _e: seen.append((env.now, tag)))
        else:
            env.timeout(delay).callbacks.append(lambda _e: seen.append((env.now, tag)))

    for tag, delay in enumerate(delays):
        at(tag, delay)
    env.run()
    return seen


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5]), max_size=30))
def test_light_events_order_as_timeouts(delays: list[float]) -> None:
    assert _run(delays, light=True) == _run(delays, light=False)


def test_a_sleeper_resumes_after_the_events_already_due() -> None:
    env, seen = simpy.Environment(), []
    loop = Sleeper(env, lambda _e: seen.append("resume"))
    loop.asleep = True
    env.timeout(0).callbacks.append(lambda _e: seen.append("due"))
    loop.wake()
    loop.wake()  # a second wake before it runs does nothing
    call_urgent(env, lambda _e: seen.append("urgent"))
    env.run()
    assert seen == ["urgent", "due", "resume"]


def _recorded_run(run: Callable[[simpy.Environment, simpy.Event], object]) -> list[tuple[float, str]]:
    """A clock with light calls, a SimPy process and a timeout stopping it: what happened, in order."""
    env = simpy.Environment()
    seen: list[tuple[float, str]] = []
    stop = env.event()

    def proc() -> Generator[simpy.Event, object, None]:
        for k in range(3):
            yield env.timeout(0.5)
            seen.append((env.now, f"process {k}"))
        stop.succeed()

    env.process(proc())
    for k in range(4):
        call_later(env, 0.5 * k, lambda _e, k=k: seen.append((env.now, f"call {k}")))
    call_later(env, 9.0, lambda _e: seen.append((env.now, "after the stop")))
    stop.callbacks.append(lambda _e: seen.append((env.now, "stop's own callback")))
    run(env, stop)
    seen.append((env.now, "end"))
    return seen


def test_run_until_takes_the_events_simpy_takes() -> None:
    assert _recorded_run(run_until) == _recorded_run(lambda env, until: env.run(until=until))


def test_run_until_without_the_event_says_so_as_simpy_does() -> None:
    env = simpy.Environment()
    call_later(env, 1.0, lambda _e: None)
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        run_until(env, env.event())
