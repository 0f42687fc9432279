"""Two-microbatch pipelining as a schedule, not a max(): each microbatch's stages run in order on their
resource (a core partition, or compute vs. communication), each resource runs one stage at a time, and the
next layer of a microbatch waits for its previous layer. The steady-state period per layer
includes the bubbles that the dependencies leave, which max(resource totals) would hide."""

from __future__ import annotations

from collections.abc import Sequence

LAYERS_SIMULATED = 6  # enough for the schedule to reach its steady state


def period(stages: Sequence[tuple[int, float]], layers: int = LAYERS_SIMULATED) -> float:
    """Steady-state time per layer of two microbatches that each run ``stages`` ((resource, duration) in
    order) every layer. List scheduling: whichever microbatch's next stage can start first goes next (ties:
    microbatch 0). The two microbatches' states are kept in separate locals (a and b): this loop is the
    hot path of every microbatched estimate."""
    res = [r for r, _ in stages]
    dur = [d for _, d in stages]
    last = len(stages) - 1
    free = dict.fromkeys(res, 0.0)  # when each resource is next free
    inf = float("inf")
    done_a = done_b = 0.0  # when each microbatch finished its previous stage
    i_a = i_b = 0  # its next stage within its layer
    left_a = left_b = layers  # layers it has still to run
    prev_a = end_a = prev_b = end_b = 0.0  # its last two layer ends
    while left_a or left_b:
        start_a = start_b = inf
        if left_a:
            start_a = free[res[i_a]]
            if done_a >= start_a:
                start_a = done_a
        if left_b:
            start_b = free[res[i_b]]
            if done_b >= start_b:
                start_b = done_b
        if start_a <= start_b:
            done_a = free[res[i_a]] = start_a + dur[i_a]
            if i_a < last:
                i_a += 1
            else:
                i_a, left_a, prev_a, end_a = 0, left_a - 1, end_a, done_a
        else:
            done_b = free[res[i_b]] = start_b + dur[i_b]
            if i_b < last:
                i_b += 1
            else:
                i_b, left_b, prev_b, end_b = 0, left_b - 1, end_b, done_b
    return max(end_a - prev_a, end_b - prev_b)


def segments(resources: Sequence[int], durations: Sequence[float]) -> list[tuple[int, float]]:
    """Merge consecutive ops on the same resource into one stage."""
    out: list[tuple[int, float]] = []
    for r, d in zip(resources, durations, strict=True):
        if out and out[-1][0] == r:
            out[-1] = (r, out[-1][1] + d)
        else:
            out.append((r, d))
    return out
