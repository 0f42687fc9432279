"""The real-time engine: one simulation advanced in step with wall time (times ``speed``) inside the asyncio
loop. Each HTTP request becomes a simulated request; its tokens are handed to the request's queue when the
simulated clock reaches them, which the loop lets happen only once wall time has caught up."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.workload.spec import Workload


@dataclass
class Stream:
    """What the HTTP handler of one request consumes: (tokens, sim time) items, then None when done."""

    rid: int
    prompt_tokens: int
    max_tokens: int
    queue: asyncio.Queue[tuple[int, float] | None] = field(default_factory=asyncio.Queue)
    generated: int = 0
    done: bool = False


class RealtimeEngine:
    def __init__(self, scenario: Scenario, speed: float = 1.0, max_outstanding: int | None = None) -> None:
        empty = Workload(input_len=_ints(), output_len=_ints(), arrival_s=None)
        self.sim = Simulation(scenario, workload=empty, listener=self)
        self.sim.start()
        self.speed = speed
        self.max_outstanding = max_outstanding or self.sim.decode_slots
        self.streams: dict[int, Stream] = {}
        self.t0: float | None = None
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.completed = 0

    # ---- clock ----------------------------------------------------------------------------------------
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def sim_now(self) -> float:
        """The simulated time wall time has reached."""
        assert self.t0 is not None
        return (self._loop().time() - self.t0) * self.speed

    def _catch_up(self) -> None:
        target = self.sim_now()
        if target > self.sim.env.now:
            self.sim.env.run(until=target)

    async def run(self) -> None:
        """Advance the simulation as wall time passes; sleep until its next event or a new request."""
        self.t0 = self._loop().time()
        self.wake = asyncio.Event()
        while True:
            self._catch_up()
            nxt = self.sim.env.peek()
            delay = None if math.isinf(nxt) else max(0.0, (nxt - self.sim_now()) / self.speed)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    # ---- requests -------------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self.streams)

    def retry_after_s(self) -> int:
        """A hint for 429s: about one request's decode time at the deployment's typical pace."""
        return max(1, math.ceil(self.sim.s.workload.output.typical * 0.05 / self.speed))

    def submit(self, prompt_tokens: int, max_tokens: int) -> Stream:
        self._catch_up()
        rid = self.sim.submit(prompt_tokens, max_tokens)
        stream = Stream(rid=rid, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        self.streams[rid] = stream
        if self.wake:
            self.wake.set()
        return stream

    def cancel(self, stream: Stream) -> None:
        """The client went away: free its simulated request."""
        if not stream.done:
            self._catch_up()
            self.sim.cancel(stream.rid)
            stream.done = True
            self.streams.pop(stream.rid, None)
            if self.wake:
                self.wake.set()

    def kv_occupancy(self) -> float:
        used = sum(int(b.pools.used.sum()) for b in self.sim.decodes)
        total = sum(b.pools.capacity * b.num_dies for b in self.sim.decodes)
        return used / total if total else 0.0

    def queue_depth(self) -> int:
        return sum(len(q) for q in self.sim.prefill_queues) + len(self.sim.waiting_kv)

    # ---- Listener (called from inside the simulation) -------------------------------------------------
    def on_tokens(self, rid: int, tokens: int, now: float) -> None:
        stream = self.streams.get(rid)
        if stream is not None:
            stream.generated += tokens
            stream.queue.put_nowait((tokens, now))

    def on_finish(self, rid: int, now: float) -> None:
        stream = self.streams.pop(rid, None)
        if stream is not None:
            stream.done = True
            self.completed += 1
            stream.queue.put_nowait(None)


def _ints() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)
