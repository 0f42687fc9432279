"""What `simulate` reports about faults: each fault's timeline (detection, pause, degraded period, back to
full capacity), the requests cut, retried, failed and slowed, decode throughput around the fault and the
time it took to get back to 95 % of it, the tokens lost, TTFT and TPOT inside the fault window, and the
capacity-weighted availability over the run."""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudmatrix.serving.requests import RequestTable, State
from cloudmatrix.sim.metrics import Recorder

BASELINE_S = 30.0  # decode throughput before a fault is measured over this window
SMOOTH_S = 5  # throughput "back to 95 %" is read on a trailing window of this many 1-s bins
BACK_SHARE = 0.95
MAX_POINTS = 2000  # the throughput series a result carries is binned to at most this many points


def fault_metrics(
    events: list[dict[str, Any]],
    table: RequestTable,
    rec: Recorder,
    end_s: float,
    instances: int,
    counts: dict[str, int],
) -> dict[str, Any]:
    series = _tokens_per_s(rec, end_s)
    for e in events:
        _throughput(e, series)
        _window_latency(e, table)
    return {
        "events": events,
        "requests": counts,
        "availability": availability(events, end_s, instances),
        "decode_tok_s_series": _binned(series),
    }


def _binned(series: np.ndarray) -> dict[str, Any]:
    """The 1-s series averaged into wider bins when the run is long (a result stays small)."""
    width = max(int(np.ceil(series.size / MAX_POINTS)), 1)
    padded = np.zeros(int(np.ceil(series.size / width)) * width)
    padded[: series.size] = series
    return {"bin_s": width, "values": [float(x) for x in padded.reshape(-1, width).mean(axis=1)]}


def _tokens_per_s(rec: Recorder, end_s: float) -> np.ndarray:
    """Decode tokens per 1-s bin of the run, each step's tokens at its end."""
    bins = np.zeros(max(int(np.ceil(end_s)), 1))
    if rec.decode_steps:
        ds = np.array(rec.decode_steps)
        at = np.minimum((ds[:, 1] + ds[:, 2]).astype(np.int64), bins.size - 1)
        np.add.at(bins, at, ds[:, 4])
    return bins


def _throughput(e: dict[str, Any], series: np.ndarray) -> None:
    at = int(e["at_s"])
    before = series[max(at - int(BASELINE_S), 0) : at]
    base = float(before.mean()) if before.size else 0.0
    e["baseline_decode_tok_s"] = base
    smooth = np.convolve(series, np.ones(SMOOTH_S) / SMOOTH_S)[: series.size]  # trailing mean
    after = np.flatnonzero(smooth[at + 1 :] >= BACK_SHARE * base) if base > 0 else np.array([], dtype=np.int64)
    back = float(after[0] + 1 + 1) if after.size else None  # end of the first bin back, from the fault's bin
    e["back_to_95pct_s"] = back
    window = int(back) if back is not None else series.size - at
    got = float(series[at : at + window].sum())
    e["decode_tokens_lost"] = max(base * window - got, 0.0)


def _window_latency(e: dict[str, Any], t: RequestTable) -> None:
    """TTFT and TPOT of the finished requests whose lives overlap the fault window (fault to back at 95 %)."""
    start = e["at_s"]
    end = start + (e["back_to_95pct_s"] or e["pause_s"])
    n = len(t)
    done = np.flatnonzero(t.state[:n] == State.DONE)
    inside = done[(t.arrival_s[done] <= end) & (t.finish_s[done] >= start)]
    ttft = t.first_token_s[inside] - t.arrival_s[inside]
    steps = np.maximum(t.output_len[inside] - 1, 1)
    tpot = (t.finish_s[inside] - t.first_token_s[inside]) / steps
    e["window_requests"] = int(inside.size)
    for name, v in (("window_ttft_ms", ttft), ("window_tpot_ms", tpot)):
        e[name] = {f"p{p}": float(np.percentile(v, p)) * 1e3 for p in (50, 99)} if v.size else None


def availability(events: list[dict[str, Any]], end_s: float, instances: int) -> float:
    """Decode capacity delivered over the run, as a share of the healthy pool's: a pause counts in full, a
    degraded period by the capacity it lacked (clipped to the run)."""
    if end_s <= 0:
        return 1.0
    lost = 0.0
    for e in events:
        if e.get("pool") == "prefill":  # the decode pool's capacity: a prefill fault shows in TTFT instead
            continue
        start, resume = e["at_s"], min(e["resume_at_s"], end_s)
        lost += max(resume - start, 0.0)
        until = min(e.get("full_capacity_at_s", e.get("until_s", end_s)), end_s)
        lost += max(until - resume, 0.0) * (1.0 - e["degraded_fraction"])
    return max(1.0 - lost / (end_s * instances), 0.0)
