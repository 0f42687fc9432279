"""The recorder and the result of a run: per-request latencies, percentiles, per-chip throughput, SLO
attainment, utilisation and KV occupancy over time. No printing; `to_dict` follows design.md §6."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from cloudmatrix.serving.requests import RequestTable, State

PCTS = (50, 90, 99)


@dataclass
class Recorder:
    """Timelines appended during the run (cheap appends), turned into arrays at the end. An online run (the
    emulator) never ends, so it keeps only the last ``limit`` rows of each."""

    limit: int | None = None
    # (instance, start, duration, active sequences, tokens generated, KV occupancy of the instance)
    decode_steps: MutableSequence[tuple[int, float, float, int, int, float]] = field(default_factory=list)
    # (instance, start, duration, prompt tokens)
    prefill_batches: MutableSequence[tuple[int, float, float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.limit is not None:
            self.decode_steps = deque(self.decode_steps, maxlen=self.limit)
            self.prefill_batches = deque(self.prefill_batches, maxlen=self.limit)

    def decode_step(self, inst: int, t: float, dur: float, seqs: int, tokens: int, kv_occupancy: float) -> None:
        self.decode_steps.append((inst, t, dur, seqs, tokens, kv_occupancy))

    def decode_stretch(
        self,
        inst: int,
        starts: list[float],
        durations: list[float],
        seqs: int,
        tokens: list[int],
        occupancy: float,
        last_occupancy: float,
    ) -> None:
        """Consecutive steps of one batch shape; only the last can free KV blocks."""
        n = len(durations)
        occupancies = [occupancy] * (n - 1) + [last_occupancy]
        self.decode_steps.extend(zip([inst] * n, starts, durations, [seqs] * n, tokens, occupancies, strict=True))

    def prefill_batch(self, inst: int, t: float, dur: float, tokens: int) -> None:
        self.prefill_batches.append((inst, t, dur, tokens))


def _table(rows: Sequence[tuple[float, ...]], width: int) -> np.ndarray:
    """Recorded rows (ints and floats mixed) as a float array, read as one flat stream of numbers: several
    times faster than ``np.array`` on a list of tuples, and the same values."""
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width)
    return flat.reshape(len(rows), width)


def _busy(timeline: np.ndarray, instances: int, span_s: float) -> list[float]:
    """Fraction of the run each instance spent in batches or steps (column 0: instance, 2: duration)."""
    return [float(timeline[timeline[:, 0] == i, 2].sum() / span_s) if span_s else 0.0 for i in range(instances)]


def _pcts(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {f"p{p}": float("nan") for p in PCTS} | {"mean": float("nan")}
    at = percentiles(values, PCTS)
    return {f"p{p}": v for p, v in zip(PCTS, at, strict=True)} | {"mean": float(values.mean())}


def percentiles(values: np.ndarray, pcts: Sequence[float]) -> list[float]:
    """``np.percentile(values, pcts).tolist()`` (its "linear" method) to the bit, from one partition of the
    values: numpy's own goes through ``np.unique``, whose first call imports ``numpy.ma`` (10 ms, about 1 % of
    a 100,000-request run). The same neighbours, weights and interpolation (``_lerp``: from the upper
    neighbour at a weight of a half or more); values with a NaN are left to numpy."""
    n, ends = values.size, []
    for p in pcts:
        at = (n - 1) * (p / 100)
        low = math.floor(at)
        if at >= n - 1:  # at or past the last value: both neighbours are the last, as numpy takes them
            low = high = -1
        else:
            high = low + 1
        ends.append((low, high, at - low))
    kth = sorted({0, n - 1} | {k % n for low, high, _ in ends for k in (low, high)})
    ordered = np.partition(values, kth)
    if math.isnan(ordered.item(n - 1)):  # NaNs sort last
        return np.percentile(values, list(pcts)).tolist()
    out = []
    for low, high, weight in ends:
        a, b = ordered.item(low), ordered.item(high)
        step = b - a
        out.append(b - step * (1 - weight) if weight >= 0.5 else a + step * weight)
    return out


@dataclass(frozen=True, kw_only=True)
class SimResult:
    scenario: str
    system: str = ""  # catalog id of the simulated system
    stack: str = ""  # the serving stack whose host costs were priced
    decode_slots: int = 0  # sequences the decode instances can run at once (their batch caps)
    table: RequestTable
    recorder: Recorder
    sim_time_s: float
    prefill_chips: int
    decode_chips: int
    prefill_instances: int
    decode_instances: int
    ttft_slo_s: float
    tpot_slo_s: float
    ems: dict[str, Any] | None = None  # context-cache statistics when the scenario has an EMS cache
    faults: dict[str, Any] | None = None  # the fault timeline and its metrics when the scenario has faults

    def done_ids(self) -> np.ndarray:
        return np.nonzero(self.table.state == State.DONE)[0]

    def ttft_s(self) -> np.ndarray:
        t = self.table
        done = self.done_ids()
        return t.first_token_s[done] - t.arrival_s[done]

    def tpot_s(self) -> np.ndarray:
        t = self.table
        done = self.done_ids()
        steps = np.maximum(t.output_len[done] - 1, 1)
        return (t.finish_s[done] - t.first_token_s[done]) / steps

    def arrived_ids(self) -> np.ndarray:
        return np.nonzero(self.table.state >= 0)[0]

    def slo_attainment(self, ok: np.ndarray) -> float:
        """Requests within both SLOs over the requests that arrived: one still unfinished when the run ends
        (``duration_s``) has missed its SLO, it does not vanish from the count."""
        arrived = self.arrived_ids().size
        return float(ok.sum() / arrived) if arrived else 0.0

    def goodput_req_s(self, ok: np.ndarray) -> float:
        """Requests served within both SLOs per second of arrivals (from the start of the run to the last
        arrival). The run's whole simulated time would add the drain after the last arrival (a request
        lifetime, a minute at 2K/2K) and read as lost goodput: a run that serves every request within its
        SLOs reports the rate it was offered. A run whose requests all arrive at once divides by its
        simulated time."""
        arrivals = self.table.arrival_s[self.arrived_ids()]
        span = float(arrivals.max()) if arrivals.size else 0.0
        span = span if span > 0 else self.sim_time_s
        return float(ok.sum()) / span if span > 0 else 0.0

    def throughput(self) -> dict[str, float]:
        """Per-chip tokens/s over each pool's active window (first batch start to last batch end)."""
        return self._throughput(*self._timelines())

    def _timelines(self) -> tuple[np.ndarray, np.ndarray]:
        """The recorded prefill batches and decode steps as arrays (rows as ``Recorder`` keeps them)."""
        rec = self.recorder
        return _table(rec.prefill_batches, 4), _table(rec.decode_steps, 6)

    def _throughput(self, pb: np.ndarray, ds: np.ndarray) -> dict[str, float]:
        out = {"prefill": 0.0, "decode": 0.0}
        if len(pb):
            window = (pb[:, 1] + pb[:, 2]).max() - pb[:, 1].min()
            out["prefill"] = float(pb[:, 3].sum() / (window * self.prefill_chips)) if window > 0 else 0.0
        if len(ds):
            window = (ds[:, 1] + ds[:, 2]).max() - ds[:, 1].min()
            out["decode"] = float(ds[:, 4].sum() / (window * self.decode_chips)) if window > 0 else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        t = self.table
        done = self.done_ids()
        ttft, tpot = self.ttft_s(), self.tpot_s()
        ok = (ttft <= self.ttft_slo_s) & (tpot <= self.tpot_slo_s)
        pb, ds = self._timelines()  # converted once: a long run records tens of thousands of steps
        ms = 1e3
        return {
            "scenario": self.scenario,
            "system": self.system,
            "stack": self.stack,
            "num_requests": int(done.size),
            "num_arrived": int(np.sum(t.state >= 0)),
            "ttft_ms": {k: v * ms for k, v in _pcts(ttft).items()},
            "tpot_ms": {k: v * ms for k, v in _pcts(tpot).items()},
            "e2e_ms": {k: v * ms for k, v in _pcts(t.finish_s[done] - t.arrival_s[done]).items()},
            "queue_ms": {k: v * ms for k, v in _pcts(t.prefill_start_s[done] - t.arrival_s[done]).items()},
            "kv_transfer_ms": {k: v * ms for k, v in _pcts(t.first_token_s[done] - t.decode_admit_s[done]).items()},
            "throughput_per_chip_tok_s": self._throughput(pb, ds),
            "slo_attainment": self.slo_attainment(ok),
            "goodput_req_s": self.goodput_req_s(ok),
            "sim_time_s": self.sim_time_s,
            "utilisation": {
                "prefill_instances": _busy(pb, self.prefill_instances, self.sim_time_s),
                "decode_instances": _busy(ds, self.decode_instances, self.sim_time_s),
            },
            "decode_active_seqs": {
                "mean": float(ds[:, 3].mean()) if len(ds) else 0.0,
                "max": int(ds[:, 3].max()) if len(ds) else 0,
            },
            "kv_occupancy": {
                "mean": float(ds[:, 5].mean()) if len(ds) else 0.0,
                "max": float(ds[:, 5].max()) if len(ds) else 0.0,
            },
            "bound": self.bound(pb, ds),
            **({"ems": self.ems} if self.ems is not None else {}),
            **({"faults": self.faults} if self.faults is not None else {}),
        }

    def bound(self, pb: np.ndarray, ds: np.ndarray) -> dict[str, Any]:
        """What limits the run: how busy the prefill pool is and how full the decode batches are. The pool
        nearer its limit sets the rate; the other has headroom (an underfilled decode pool runs small, fast
        batches: its tok/s per chip is then far below its capacity)."""
        prefill = _busy(pb, self.prefill_instances, self.sim_time_s) if self.prefill_instances else []
        busy = float(np.mean(prefill)) if len(prefill) else 0.0
        fill = float(ds[:, 3].mean()) / self.decode_slots if len(ds) and self.decode_slots else 0.0
        pool = "prefill" if busy >= fill else "decode"
        return {"prefill_busy": busy, "decode_batch_fill": fill, "pool": pool}

    def timeline_rows(self) -> list[dict[str, Any]]:
        """Every prefill batch and decode step, in time order: utilisation and KV occupancy over time."""
        rows = [
            {
                "kind": "prefill",
                "instance": i,
                "start_s": t,
                "duration_s": d,
                "sequences": 0,
                "tokens": n,
                "kv_occupancy": 0.0,
            }
            for i, t, d, n in self.recorder.prefill_batches
        ]
        rows += [
            {
                "kind": "decode",
                "instance": i,
                "start_s": t,
                "duration_s": d,
                "sequences": s,
                "tokens": n,
                "kv_occupancy": kv,
            }
            for i, t, d, s, n, kv in self.recorder.decode_steps
        ]
        return sorted(rows, key=lambda r: (r["start_s"], r["kind"]))

    def requests_rows(self) -> list[dict[str, Any]]:
        t = self.table
        cols = {name: getattr(t, name) for name in RequestTable.STAMPS}
        return [
            {
                "id": i,
                "input_len": int(t.input_len[i]),
                "output_len": int(t.output_len[i]),
                **{k: float(v[i]) for k, v in cols.items()},
            }
            for i in range(len(t))
        ]
