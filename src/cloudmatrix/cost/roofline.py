"""The roofline of a layer as a true lower bound on its time (docs/model.md §6).

Serial graph: the ops run one after another, so the sum of their rooflines (each op at peak compute or
peak bandwidth, whichever binds) bounds the layer. Two microbatches overlap: one microbatch's compute runs
while the other's data moves, so that sum is no bound. Each resource still has to do the work of both
microbatches, so the layer takes at least the busiest resource's work at speed of light: the FLOPs on
each core partition (at the share of the cores the step gives it), the bytes through HBM, and the bytes
over each communication link. No overheads (launches, handshakes, host time) enter the bound."""

from __future__ import annotations

from collections.abc import Sequence

SERIAL = "serial"
HBM = "hbm"


def serial_bound_s(rooflines: Sequence[float]) -> tuple[float, str]:
    """(bound, binding resource) of ops that run one after another."""
    return sum(rooflines), SERIAL


def overlapped_bound_s(
    compute: Sequence[tuple[str, float]], hbm_s: Sequence[float], links: Sequence[tuple[str, float]], copies: int
) -> tuple[float, str]:
    """(bound, binding resource) of ``copies`` microbatches of the same ops sharing the die: ``compute``
    is each op's (core partition, FLOPs at peak on that partition), ``hbm_s`` its bytes at peak bandwidth,
    ``links`` each communication op's (link, bytes at the link's raw rate)."""
    work: dict[str, float] = {}
    for partition, s in compute:
        work[partition] = work.get(partition, 0.0) + copies * s
    work[HBM] = copies * sum(hbm_s)
    for link, s in links:
        key = "link:" + link
        work[key] = work.get(key, 0.0) + copies * s
    binding = max(work, key=lambda r: work[r])
    return work[binding], binding
