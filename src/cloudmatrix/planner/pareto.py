"""The Pareto front of throughput per chip against tokens/s per user: the points no other point beats on
both (more throughput per chip at no less interactivity)."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates maximised), by falling x. Of equal points
    the first listed is kept, so the result is deterministic."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1], i))
    front: list[int] = []
    best_y = float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front
