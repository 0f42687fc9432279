"""What a fault does beyond a disaggregated decode instance (docs/faults.md §1): a prefill instance's batch in
flight and its queue, an aggregated (co-located) instance's prompts in progress, the EMS cache tiers a node's
CPU (its DRAM) or SSD held, and the KV of surviving sequences migrated over the fabric to a standby. The
injector (sim/fault_injector.py) calls these; each names what it uses of the simulation as a Protocol."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np
import simpy

from cloudmatrix.cost import comm
from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.ems import ContextCache
from cloudmatrix.serving.prefill import PrefillQueue
from cloudmatrix.serving.requests import RequestTable
from cloudmatrix.sim.costs import StepCosts


class Pools(Protocol):
    """What these helpers use of the simulation (sim/engine.py)."""

    env: simpy.Environment
    table: RequestTable
    costs: StepCosts
    prefill_queues: list[PrefillQueue]
    prefill_busy: list[bool]
    prefill_batches: list[list[int]]

    def _enqueue(self, rid: int) -> None: ...


class Aggregated(Protocol):
    """An aggregated instance (sim/aggregated.py): its prompts queued and in progress."""

    queue: deque[int]
    prefilling: list[list[int]]  # [request id, slot, prompt tokens still to prefill]
    pending_tokens: int


def prefill_cut(sim: Pools, inst: int) -> list[int]:
    """The requests a prefill instance's fault takes: its batch in flight (their prefill is lost)."""
    return list(sim.prefill_batches[inst]) if sim.prefill_busy[inst] else []


def drain_prefill_queue(sim: Pools, inst: int) -> list[int]:
    """The instance's queued requests, taken off it to be routed to the others."""
    queue = sim.prefill_queues[inst]
    rids = [rid for rid, _ in queue.queue]
    queue.queue.clear()
    queue.queued_tokens = 0
    return rids


def aggregated_cut(
    agg: Aggregated, batch: DecodeBatch, table: RequestTable, dies: set[int], whole: bool
) -> tuple[list[int], list[int]]:
    """An aggregated instance's prompts a fault takes: those in progress on the lost dies (their slots are
    released) and, when the instance stops, those queued on it. Returns (cut, to re-route)."""
    cut: list[int] = []
    for entry in list(agg.prefilling):
        rid, slot, left = entry
        if whole or slot // batch.cap in dies:
            agg.prefilling.remove(entry)
            agg.pending_tokens -= left
            batch.release(slot)
            cut.append(rid)
    moved: list[int] = []
    if whole:
        while agg.queue:
            rid = agg.queue.popleft()
            agg.pending_tokens -= int(table.input_len[rid])  # its prompt is routed to another instance
            moved.append(rid)
    return cut, moved


def lose_cache_share(cache: ContextCache | None, tier: str, share: float) -> int:
    """A node's part of an EMS tier is gone until it is repaired: ``share`` of the tier's blocks and of its
    capacity (the blocks every k-th in LRU order, a deterministic spread: which node holds a block is not
    modelled); returns the capacity taken, for ``restore_cache_share``."""
    if cache is None or share <= 0:
        return 0
    return cache.drop_share(tier, share)


def restore_cache_share(cache: ContextCache | None, tier: str, blocks: int) -> None:
    if cache is not None and blocks:
        cache.restore_capacity(tier, blocks)


def migration_s(sim: Pools, contexts: np.ndarray, dies: np.ndarray, stripe: int = 1) -> float:
    """The surviving sequences' KV moved to the standby over the scale-out plane: each die sends its
    sequences' KV one after another over its own NIC share, the dies in parallel (the slowest sets the
    time). Priced by the same hand-off the prefill-to-decode transfer uses (cost/comm.kv_handoff_s)."""
    if contexts.size == 0:
        return 0.0
    costs = sim.costs
    per_die: dict[int, float] = {}
    for ctx, die in zip(contexts.tolist(), dies.tolist(), strict=True):
        t = comm.kv_handoff_s(costs.hw, costs.model, int(ctx), costs.s.kv_precision, stripe)
        per_die[die] = per_die.get(die, 0.0) + t
    return max(per_die.values())


def reserve(batch: DecodeBatch, table: RequestTable, rids: np.ndarray) -> tuple[list[int], list[int]]:
    """Slots on the standby for migrating sequences, taken before anything else is admitted (their KV is on
    its way, as a hand-off's is); returns (slots, request ids that found no room: to be resubmitted)."""
    slots: list[int] = []
    homeless: list[int] = []
    for rid in rids.tolist():
        blocks = batch.pools.blocks_for(int(table.input_len[rid] + table.output_len[rid]))
        die = batch.choose_die(blocks)
        if die is None:
            homeless.append(rid)
            slots.append(-1)
            continue
        slots.append(batch.reserve(rid, die, blocks))
    return slots, homeless


def activate(batch: DecodeBatch, table: RequestTable, rids: np.ndarray, left: np.ndarray, slots: list[int]) -> None:
    """The migrated KV landed: the sequences decode on with the tokens they had left (first token out)."""
    for rid, remaining, slot in zip(rids.tolist(), left.tolist(), slots, strict=True):
        if slot >= 0:
            batch.activate(slot, int(table.input_len[rid] + table.output_len[rid] - remaining), int(remaining))


def later(env: simpy.Environment, delay: float, fn: Callable[[], None]) -> None:
    env.timeout(delay).callbacks.append(lambda _e: fn())
