"""The real-time engine: one simulation advanced in step with wall time (times ``speed``) inside the asyncio
loop. Each HTTP request becomes a simulated request; its tokens are handed to the request's queue when the
simulated clock reaches them, which the loop lets happen only once wall time has caught up."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudmatrix.deploy import mtp_tokens_per_step
from cloudmatrix.emulator.text import CharTokens
from cloudmatrix.emulator.tokenizer_worker import TokenizerPool
from cloudmatrix.errors import ConfigError
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.workload.spec import Workload


@dataclass
class Stream:
    """What the HTTP handler of one request consumes: (tokens, sim time) items, then None when done.
    ``rid`` is the public request id (response ids, timelines): random, so one client cannot read another's
    timeline by counting; ``seq`` its arrival number (it seeds the filler text); ``row`` its row in the
    simulation's table, which a later request reuses once this one is over."""

    rid: str
    seq: int
    row: int
    prompt_tokens: int
    max_tokens: int
    output_tokens: int  # the completion's length: drawn from the scenario's output lengths, capped at max_tokens
    queue: asyncio.Queue[tuple[int, float] | str | None] = field(default_factory=asyncio.Queue)
    generated: int = 0
    done: bool = False
    cached: int = 0  # prompt tokens the EMS cache supplied, kept when the row is given back
    arrived: float = field(default_factory=time.perf_counter)  # wall clock when the request came in

    @property
    def finish_reason(self) -> str:
        """OpenAI's: "stop" when the simulated end-of-sequence came before max_tokens, else "length"."""
        return "stop" if self.output_tokens < self.max_tokens else "length"


HISTORY = 10_000  # finished requests whose timelines /v1/cloudmatrix/requests/{id} still answers for
SHUTDOWN = "shutdown"  # pushed into every open stream when the drain deadline of a SIGTERM passes
FAULT = "fault"  # pushed into a stream whose sequence a simulated fault cut


class RealtimeEngine:
    def __init__(
        self,
        scenario: Scenario,
        speed: float = 1.0,
        max_outstanding: int | None = None,
        tokens: CharTokens | TokenizerPool | None = None,
    ) -> None:
        if scenario.aggregated is not None:
            raise ConfigError(
                f"scenario '{scenario.name}': serve emulates disaggregated deployments (prefill and "
                "decode pools); co-located ones run in `simulate`"
            )
        empty = Workload(input_len=_ints(), output_len=_ints(), arrival_s=None)
        self.sim = Simulation(scenario, workload=empty, listener=self)
        self.sim.start()
        self.speed = speed
        self.tokens = tokens or CharTokens()  # how prompts are counted and cut into cache blocks
        self.max_outstanding = max_outstanding or self.sim.decode_slots
        self.streams: dict[int, Stream] = {}  # live requests by table row
        self.next_seq = 0
        self.live_rows: dict[str, int] = {}  # public id -> table row of the live requests
        self.history: OrderedDict[str, dict[str, Any]] = OrderedDict()  # public id -> timeline, the last HISTORY
        self.unrecycled: dict[int, str] = {}  # row -> public id of cancelled requests the simulation still holds
        self.loop: asyncio.AbstractEventLoop | None = None
        self.t0 = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.completed = 0
        self.draining = False

    # ---- clock ----------------------------------------------------------------------------------------
    def sim_now(self) -> float:
        """The simulated time wall time has reached."""
        assert self.loop is not None
        return (self.loop.time() - self.t0) * self.speed

    def _catch_up(self) -> None:
        """Process every simulated event wall time has reached, and move the clock to now."""
        env = self.sim.env
        target = self.sim_now()
        if target > env.now:
            env.run(until=target)
        while env.peek() <= env.now:
            env.step()

    def _tick(self) -> None:
        self.timer = None
        self._catch_up()
        self._arm()

    def _arm(self) -> None:
        """One timer, at the wall time of the next simulated event."""
        assert self.loop is not None
        nxt = self.sim.env.peek()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not math.isinf(nxt):
            self.timer = self.loop.call_at(self.t0 + nxt / self.speed, self._tick)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self._arm()

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if isinstance(self.tokens, TokenizerPool):
            self.tokens.close()

    def begin_drain(self, deadline_s: float) -> None:
        """SIGTERM: admit nothing new; streams still open ``deadline_s`` from now are ended with an error
        event rather than cut (the server closes its connections just after)."""
        assert self.loop is not None
        self.draining = True
        self.loop.call_later(max(deadline_s, 0.0), self._cut_open_streams)

    def _cut_open_streams(self) -> None:
        for stream in list(self.streams.values()):
            if not stream.done:
                stream.queue.put_nowait(SHUTDOWN)

    # ---- requests -------------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self.streams)

    def retry_after_s(self) -> int:
        """A hint for 429s from the live requests: the wall time until the one closest to done frees its
        slot (its remaining tokens at the deployment's decode pace), at least 1 s."""
        costs, pool = self.sim.costs, self.sim.s.decode
        assert pool is not None
        step = costs.decode_step_s(pool.batch_per_chip // costs.hw.chip.num_dies, self.sim.s.workload.input.typical)
        tpot = step / mtp_tokens_per_step(pool.mtp, pool.mtp_acceptance)
        remaining = min((s.output_tokens - s.generated for s in self.streams.values()), default=0)
        return max(1, math.ceil(max(remaining, 0) * tpot / self.speed))

    def recovery_retry_after_s(self) -> int:
        """Wall seconds until a simulated fault's recovery lets the deployment serve again (0: serving)."""
        if self.sim.faults is None:
            return 0
        self._catch_up()
        left = self.sim.faults.recovering_s()
        return max(1, math.ceil(left / self.speed)) if left > 0 else 0

    @property
    def block_tokens(self) -> int | None:
        """The EMS cache's block size, None without a cache (then prompts need no block hashes)."""
        return self.sim.ems.block_tokens if self.sim.ems is not None else None

    def output_length(self, seq: int, max_tokens: int, min_tokens: int = 0, ignore_eos: bool = False) -> int:
        """Where request ``seq`` meets its simulated end-of-sequence: a draw from the scenario's output lengths
        (seeded by the scenario's seed and the arrival number, so a replay gets the same lengths), not before
        ``min_tokens``, and never past ``max_tokens``; ``ignore_eos`` runs it to ``max_tokens``."""
        if ignore_eos:
            return max_tokens
        rng = np.random.default_rng([self.sim.s.seed, zlib.crc32(b"serve_output_len"), seq])
        drawn = int(self.sim.s.workload.output.sample(rng, 1)[0])
        return min(max(drawn, min_tokens, 1), max_tokens)

    def submit(
        self,
        prompt_tokens: int,
        max_tokens: int,
        hashes: list[int] | None = None,
        *,
        min_tokens: int = 0,
        ignore_eos: bool = False,
    ) -> Stream:
        """A request from a client; with its prompt's chained block hashes, the EMS cache sees its prefix. Its
        completion ends at a simulated end-of-sequence (``output_length``) unless ``ignore_eos``."""
        self._catch_up()
        seq = self.next_seq
        output = self.output_length(seq, max_tokens, min_tokens, ignore_eos)
        row = self.sim.submit(prompt_tokens, output, hashes)
        rid = public_id()
        stream = Stream(
            rid=rid, seq=seq, row=row, prompt_tokens=prompt_tokens, max_tokens=max_tokens, output_tokens=output
        )
        self.next_seq += 1
        self.streams[row] = stream
        self.live_rows[stream.rid] = row
        self._arm()
        return stream

    def cancel(self, stream: Stream) -> None:
        """The client went away: free its simulated request."""
        if not stream.done:
            self._catch_up()
            self.sim.cancel(stream.row)
            stream.done = True
            self.streams.pop(stream.row, None)
            self._retire(stream)
            self._arm()

    def _retire(self, stream: Stream) -> None:
        """Keep the request's timeline (bounded) and give its row back once the simulation lets go of it."""
        self.live_rows.pop(stream.rid, None)
        stream.cached = self.sim.cached_of.get(stream.row, 0)
        self.history[stream.rid] = self.timeline_of_row(stream.row, stream.max_tokens)
        if len(self.history) > HISTORY:
            self.history.popitem(last=False)
        if not self.sim.recycle(stream.row):
            self.unrecycled[stream.row] = stream.rid
        for row, rid in [(r, i) for r, i in self.unrecycled.items() if r != stream.row]:
            if self.sim.recycle(row):  # its prefill or transfer has ended: the row still holds its data
                del self.unrecycled[row]
                if rid in self.history:
                    self.history[rid] = self.timeline_of_row(row, self.history[rid]["max_tokens"])

    def timeline(self, rid: str) -> dict[str, Any] | None:
        """What the simulation predicted for public request ``rid``: live, or among the last HISTORY."""
        row = self.live_rows.get(rid)
        if row is not None:
            return self.timeline_of_row(row, self.streams[row].max_tokens) | {"id": rid}
        kept = self.history.get(rid)
        return None if kept is None else kept | {"id": rid}

    def timeline_of_row(self, row: int, max_tokens: int) -> dict[str, Any]:
        t = self.sim.table
        stamps = {name: _stamp(getattr(t, name)[row]) for name in t.STAMPS}
        first, arrival, finish = stamps["first_token_s"], stamps["arrival_s"], stamps["finish_s"]
        out = int(t.output_len[row])
        return {
            "state": State(int(t.state[row])).name.lower() if t.state[row] >= 0 else "new",
            "speed": self.speed,
            "prompt_tokens": int(t.input_len[row]),
            "max_tokens": max_tokens,
            "output_tokens": out,
            **stamps,
            "ttft_s": None if first is None or arrival is None else first - arrival,
            "tpot_s": None if finish is None or first is None or out < 2 else (finish - first) / (out - 1),
        }

    @property
    def max_context_tokens(self) -> int:
        """The longest request (prompt + completion) whose KV one decode die can ever hold: longer ones
        would wait for a slot that never comes, so the API refuses them up front."""
        batch = self.sim.decodes[0]
        return int(batch.pools.capacity * batch.pools.block_tokens)

    def cached_tokens(self, stream: Stream) -> int:
        """Prompt tokens of this request whose KV the EMS context cache supplied (0 without a cache)."""
        return stream.cached if stream.done else self.sim.cached_of.get(stream.row, 0)

    def kv_occupancy(self) -> float:
        used = sum(int(b.pools.used.sum()) for b in self.sim.decodes)
        total = sum(b.pools.capacity * b.num_dies for b in self.sim.decodes)
        return used / total if total else 0.0

    def cache_hit_rate(self) -> float:
        """Share of prompt tokens the EMS context cache has supplied (0 without a cache)."""
        ems = self.sim.ems
        return ems.cached_tokens / ems.prompt_tokens if ems and ems.prompt_tokens else 0.0

    def prefix_cache_tokens(self) -> tuple[int, int]:
        """Prompt tokens looked up in the EMS context cache and those it supplied (0, 0 without a cache)."""
        ems = self.sim.ems
        return (ems.prompt_tokens, ems.cached_tokens) if ems else (0, 0)

    def running(self) -> int:
        """Requests in a prefill batch, a KV transfer or a decode batch: in flight and not queued."""
        return max(self.outstanding - self.queue_depth(), 0)

    def queue_depth(self) -> int:
        return sum(len(q) for q in self.sim.prefill_queues) + len(self.sim.waiting_kv)

    # ---- Listener (called from inside the simulation) -------------------------------------------------
    def on_tokens(self, row: int, tokens: int, now: float) -> None:
        stream = self.streams.get(row)
        if stream is not None:
            stream.generated += tokens
            stream.queue.put_nowait((tokens, now))

    def on_cut(self, row: int, now: float) -> None:
        stream = self.streams.pop(row, None)
        if stream is not None:
            stream.done = True
            stream.queue.put_nowait(FAULT)
            self._retire(stream)

    def on_finish(self, row: int, now: float) -> None:
        stream = self.streams.pop(row, None)
        if stream is not None:
            stream.done = True
            self.completed += 1
            stream.queue.put_nowait(None)
            self._retire(stream)


def public_id() -> str:
    """128 random bits, URL-safe: what response ids carry and timelines are looked up by."""
    return secrets.token_urlsafe(16)


def _stamp(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _ints() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)
