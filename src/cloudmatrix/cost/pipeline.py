"""Two-microbatch pipelining as a schedule, not a max(): each microbatch's stages run in order on their
resource (a core partition, or compute vs. communication), each resource runs one stage at a time, and the
next layer of a microbatch waits for its previous layer. The steady-state period per layer
includes the bubbles that the dependencies leave, which max(resource totals) would hide."""

from __future__ import annotations

from collections.abc import Sequence

LAYERS_SIMULATED = 6  # enough for the schedule to reach its steady state


def period(stages: Sequence[tuple[int, float]], layers: int = LAYERS_SIMULATED) -> float:
    """Steady-state time per layer of two microbatches that each run ``stages`` ((resource, duration) in
    order) every layer. List scheduling: whichever microbatch's next stage can start first goes next."""
    free: dict[int, float] = {}
    done = [0.0, 0.0]  # when each microbatch finished its previous stage
    position = [0, 0]  # stages issued so far, per microbatch
    total = len(stages) * layers
    layer_end: list[list[float]] = [[], []]
    while position[0] < total or position[1] < total:
        starts = [
            max(done[mb], free.get(stages[position[mb] % len(stages)][0], 0.0))
            if position[mb] < total
            else float("inf")
            for mb in (0, 1)
        ]
        mb = 0 if starts[0] <= starts[1] else 1
        resource, duration = stages[position[mb] % len(stages)]
        done[mb] = free[resource] = starts[mb] + duration
        position[mb] += 1
        if position[mb] % len(stages) == 0:
            layer_end[mb].append(done[mb])
    return max(layer_end[0][-1] - layer_end[0][-2], layer_end[1][-1] - layer_end[1][-2])


def segments(resources: Sequence[int], durations: Sequence[float]) -> list[tuple[int, float]]:
    """Merge consecutive ops on the same resource into one stage."""
    out: list[tuple[int, float]] = []
    for r, d in zip(resources, durations, strict=True):
        if out and out[-1][0] == r:
            out[-1] = (r, out[-1][1] + d)
        else:
            out.append((r, d))
    return out
