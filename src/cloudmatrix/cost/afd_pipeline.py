"""The ping-pong pipeline of attention-FFN disaggregation as a schedule (MegaScale-Infer §4, Step-3 §5,
xDeepServe's MoE-attention disaggregation): a decode step's batch is split into ``m`` microbatches that
shuttle between the attention pool, the attention-to-FFN link, the FFN pool and the FFN-to-attention link,
layer after layer. Each resource runs one microbatch's stage at a time; a microbatch's next stage waits for
its previous one. While one microbatch is in the experts, the others attend or cross the links, so the
transfers are hidden when ``m`` is large enough and the stages are balanced; the schedule's makespan
includes the fill, the drain and every bubble the dependencies leave, which no max() of totals shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ATTENTION, TO_FFN, FFN, TO_ATTENTION = 0, 1, 2, 3  # the resources a microbatch's stages run on
RESOURCE_NAMES = ("attention", "to_ffn", "ffn", "to_attention")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    makespan_s: float
    busy_s: tuple[float, ...]  # per resource: the time it ran stages (all microbatches)

    def idle_s(self, resource: int) -> float:
        return self.makespan_s - self.busy_s[resource]


def schedule(stages: Sequence[tuple[int, float]], microbatches: int) -> Schedule:
    """Every microbatch runs ``stages`` ((resource, seconds) in order). List scheduling: the stage that can
    start earliest goes next (ties: the lower microbatch), so microbatch 0 leads and the rest follow it
    through the pools, as the engines issue them."""
    free = [0.0] * len(RESOURCE_NAMES)
    busy = [0.0] * len(RESOURCE_NAMES)
    done = [0.0] * microbatches  # when each microbatch finished its last stage
    nxt = [0] * microbatches  # its next stage
    total = len(stages)
    remaining = microbatches * total
    while remaining:
        best, best_start = -1, float("inf")
        for mb in range(microbatches):
            i = nxt[mb]
            if i < total:
                start = max(free[stages[i][0]], done[mb])
                if start < best_start:
                    best, best_start = mb, start
        resource, seconds = stages[nxt[best]]
        done[best] = free[resource] = best_start + seconds
        busy[resource] += seconds
        nxt[best] += 1
        remaining -= 1
    return Schedule(makespan_s=max(done, default=0.0), busy_s=tuple(busy))
