"""Light events take the place in SimPy's queue that a Timeout or a process would: the same order on ties,
with or without SimPy events mixed in, and a sleeping loop resumes after the events already due."""

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.sim.events import Sleeper, call_later, call_urgent


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
