"""Two-microbatch pipelining as a schedule, not a max(): each microbatch's stages run in order on their
resource (a core partition, or compute vs. communication), each resource runs one stage at a time, and the
next layer of a microbatch waits for its previous layer. The steady-state period per layer
includes the bubbles that the dependencies leave, which max(resource totals) would hide.

The order on each resource is the engines' fixed two-batch-overlap order, not a greedy choice: every stage
runs for microbatch A, then for microbatch B, stage after stage and layer after layer (SGLang's
two_batch_overlap executes each stage of its operation strategy for both batches in turn; DeepSeek's decode
overlaps one microbatch's attention with the other's dispatch, MoE and combine; CloudMatrix-Infer's two
streams alternate microbatches). With a fixed order the period is a max-plus cycle mean, continuous in the
stage times, where greedy list scheduling jumped by milliseconds when a stage moved by microseconds."""

from __future__ import annotations

from collections.abc import Sequence

LAYERS_SIMULATED = 8  # the first half reaches the steady state; the period is the second half's mean


def period(stages: Sequence[tuple[int, float]], layers: int = LAYERS_SIMULATED) -> float:
    """Steady-state time per layer of two microbatches that each run ``stages`` ((resource, duration) in
    order) every layer, in the fixed order A then B for each stage. A last stage on the first stage's
    resource runs back to back with the next layer's first, so it is folded into it (the cycle is the same).
    The mean over the second half of the layers covers schedules that settle into a two-layer rhythm."""
    if len(stages) > 1 and stages[0][0] == stages[-1][0]:
        stages = [(stages[0][0], stages[-1][1] + stages[0][1]), *stages[1:-1]]
    if len(stages) % 2 == 0 and len({r for r, _ in stages}) == 2:  # consecutive stages differ (segments)
        return _alternating_period([d for _, d in stages], layers)
    free = dict.fromkeys((r for r, _ in stages), 0.0)  # when each resource is next free
    done_a = done_b = 0.0  # when each microbatch finished its previous stage
    half = layers // 2
    mark_a = mark_b = 0.0
    for layer in range(layers):
        if layer == half:
            mark_a, mark_b = done_a, done_b
        for r, d in stages:
            start = free[r]
            done_a = free[r] = (start if start > done_a else done_a) + d
            start = free[r]
            done_b = free[r] = (start if start > done_b else done_b) + d
    return max(done_a - mark_a, done_b - mark_b) / (layers - half)


def _alternating_period(durations: list[float], layers: int) -> float:
    """``period`` of stages that alternate between two resources, layer boundaries included: a stage's
    resource was last used two stages before, so it is free when microbatch B finished that stage. The same
    additions and comparisons as the general schedule, in the same order (the same floats), without its
    per-resource bookkeeping: this runs for every layer kind of every microbatched graph priced."""
    a = b = b_before = 0.0  # A's and B's last finish, and B's finish one stage earlier
    half = layers // 2
    for _ in range(half):
        for d in durations:
            a = (b_before if b_before > a else a) + d
            b_before, b = b, (a if a > b else b) + d
    mark_a, mark_b = a, b
    for _ in range(layers - half):
        for d in durations:
            a = (b_before if b_before > a else a) + d
            b_before, b = b, (a if a > b else b) + d
    return max(a - mark_a, b - mark_b) / (layers - half)


def ops_period(resources: Sequence[int], durations: Sequence[float], layers: int = LAYERS_SIMULATED) -> float:
    """``period(segments(resources, durations))``, the same floats, in one pass where the stages alternate
    between two resources (every microbatched layer of a step): the cost model runs this for every layer
    kind of every microbatched graph it prices."""
    stage_times: list[float] = []
    on: set[int] = set()
    last = None
    for r, d in zip(resources, durations, strict=True):  # segments(), without its (resource, time) pairs
        if r == last:
            stage_times[-1] += d
        else:
            stage_times.append(d)
            on.add(r)
            last = r
    if len(stage_times) > 1 and resources[0] == last:  # period()'s fold of a last stage into the first
        stage_times[0] = stage_times.pop() + stage_times[0]
    if len(on) == 2 and len(stage_times) % 2 == 0:
        return _alternating_period(stage_times, layers)
    return period(segments(resources, durations), layers)


def segments(resources: Sequence[int], durations: Sequence[float]) -> list[tuple[int, float]]:
    """Merge consecutive ops on the same resource into one stage."""
    out: list[tuple[int, float]] = []
    for r, d in zip(resources, durations, strict=True):
        if out and out[-1][0] == r:
            out[-1] = (r, out[-1][1] + d)
        else:
            out.append((r, d))
    return out
