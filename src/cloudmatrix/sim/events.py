"""Light events on SimPy's clock. A simulated request passes through a handful of events (arrival, queueing,
KV arrival); a SimPy Timeout and a generator process per event cost several microseconds each, so the hot
path schedules plain callbacks on the same event queue instead. They take their place in it exactly as a
Timeout (or a process's start) would: the same time sum, the same priority, the next id of the same counter.
So a run orders its events as it did with processes, and anything else on the clock (a SimPy process, a
fault injected from outside) interleaves with them as SimPy would order it."""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.events import NORMAL, URGENT, EventPriority


class Call:
    """What SimPy's ``Environment.step`` reads of an event: its callbacks, and that it succeeded."""

    __slots__ = ("_defused", "_ok", "_value", "callbacks")

    def __init__(self, callback: Callable[[Any], None]) -> None:
        self.callbacks: list[Callable[[Any], None]] | None = [callback]
        self._ok = True
        self._value = None


def _push(env: simpy.Environment, at: float, priority: int, callback: Callable[[Any], None]) -> None:
    queue: list[Any] = env._queue  # SimPy's own event queue: (time, priority, id, event)
    heappush(queue, (at, priority, next(env._eid), Call(callback)))


def call_later(env: simpy.Environment, delay: float, callback: Callable[[Any], None]) -> None:
    """``callback(event)`` at now + ``delay``, where ``env.timeout(delay)`` would fire (same sum, same order)."""
    queue: list[Any] = env._queue  # ``_push``, written out (one call fewer an event)
    heappush(queue, (env._now + delay, NORMAL, next(env._eid), Call(callback)))


def call_at(env: simpy.Environment, at: float, callback: Callable[[Any], None]) -> None:
    """``callback(event)`` at ``at`` (a time already summed as a timeout would sum it)."""
    queue: list[Any] = env._queue
    heappush(queue, (at, NORMAL, next(env._eid), Call(callback)))


def call_urgent(env: simpy.Environment, callback: Callable[[Any], None]) -> None:
    """``callback(event)`` now, ahead of normal events: where a new SimPy process takes its first step."""
    _push(env, env._now, URGENT, callback)


class Sleeper:
    """A loop that sleeps when it has nothing to do and is woken by others: ``wake`` resumes it as an event
    at the current time (after the events already due now), as a SimPy process waiting on an event would be.
    Waking a loop that is not asleep does nothing."""

    __slots__ = ("asleep", "env", "resume")

    def __init__(self, env: simpy.Environment, resume: Callable[[Any], None]) -> None:
        self.env, self.resume, self.asleep = env, resume, False

    def start(self) -> None:
        call_urgent(self.env, self.resume)

    def wake(self) -> None:
        if self.asleep:
            self.asleep = False
            call_later(self.env, 0, self.resume)


def run_until(env: simpy.Environment, until: simpy.Event) -> None:
    """``env.run(until=until)`` for an event not yet processed, without a method call and a ``try`` per event:
    the same events in the same order (SimPy's ``step``, written out), stopping once ``until`` is popped."""
    queue: list[Any] = env._queue
    first = len(until.callbacks)  # where SimPy's run appends its stop: the callbacks before it run, not those after
    pop = heappop
    while queue:
        env._now, _, _, event = pop(queue)
        callbacks, event.callbacks = event.callbacks, None
        if event is until:
            for callback in callbacks[:first]:
                callback(event)
            if len(callbacks) > first:  # added during the run: left for a later run, as SimPy leaves them
                event.callbacks = callbacks[first:]
                env.schedule(event, EventPriority(-1))
            return
        for callback in callbacks:
            callback(event)
        if not event._ok and not hasattr(event, "_defused"):  # a failed event crashes the run, as in ``step``
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc
    raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}')
