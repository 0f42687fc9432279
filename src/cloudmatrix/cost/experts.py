"""Expert load: which die carries the most routed tokens, since the busiest die sets MoE time (design.md
§3 rule 4). Three steps, each a plain function:

1. ``popularity``: the long-run share of routed tokens per expert, from the model's routing profile.
2. ``place``: expert copies on dies. ``none`` puts one copy of each expert in id order and leaves the
   redundant slots empty; ``default`` is EPLB as DeepSeek and CloudMatrix-Infer run it: the redundant slots
   go one by one to the expert with the highest load per copy, then the copies are packed heaviest first
   onto the least-loaded die with a free slot; ``perfect`` is the uniform case.
3. ``sampled_busiest_factor``: the expected busiest-die load over the mean, from seeded draws of one batch's
   routing. A batch's expert mix departs from the long-run mix EPLB placed for: by the sampling noise of
   top-k routing and, for batches of few long prompts, by each request's own mix (Dirichlet with the
   profile's request concentration; see catalog/routing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cloudmatrix.catalog.routing import RoutingProfile
from cloudmatrix.deploy import Eplb, ExpertLayout
from cloudmatrix.errors import ConfigError

SAMPLES = 64  # batch draws per estimate; the expected maximum is stable to ~0.1 % at this count
SEED = 20250612  # fixed: the same deployment always prices the same (design.md §5)
_PLACEMENT_SEED = 7  # which expert ids land together under ``none`` (ids carry no popularity order)


def popularity(profile: RoutingProfile, num_experts: int, top_k: int) -> np.ndarray:
    """Long-run share of routed (token, expert) pairs per expert, summing to 1. A token picks an expert
    at most once, so no share can exceed 1/top_k; excess is spread over the rest."""
    if profile.popularity == "histogram":
        hist = np.asarray(profile.histogram, dtype=float)
        if hist.size != num_experts:
            raise ConfigError(f"routing histogram has {hist.size} experts; the model has {num_experts}")
        p = hist
    elif profile.popularity == "zipf":
        assert profile.zipf_exponent is not None
        p = np.arange(1, num_experts + 1, dtype=float) ** -profile.zipf_exponent.value
        p = np.random.default_rng(_PLACEMENT_SEED).permutation(p)  # expert ids are not ranked by load
    else:
        p = np.ones(num_experts)
    p = p / p.sum()
    cap = 1.0 / top_k
    for _ in range(num_experts):
        over = p > cap
        if not over.any():
            break
        excess = (p[over] - cap).sum()
        p[over] = cap
        p[~over] += excess * p[~over] / p[~over].sum()
    return p


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Copies of each expert and the die of every copy (slot)."""

    slot_expert: np.ndarray  # expert id of each occupied slot
    slot_die: np.ndarray  # die index (0 .. routed_dies - 1) of each occupied slot
    replicas: np.ndarray  # copies per expert
    num_dies: int


def _replicas(p: np.ndarray, spare: int) -> np.ndarray:
    """EPLB's redundancy rule: each spare slot goes to the expert with the highest load per copy."""
    copies = np.ones(p.size, dtype=int)
    for _ in range(spare):
        copies[np.argmax(p / copies)] += 1
    return copies


def place(p: np.ndarray, layout: ExpertLayout, eplb: Eplb) -> Placement:
    """Expert copies on the routed dies. EPLB keeps the static placement if its own would not lower the
    busiest die's long-run load, so it is never worse than no EPLB."""
    static = _static(p.size, layout.routed_dies)
    if eplb != Eplb.DEFAULT:  # none (and perfect, whose loads are uniform anyway)
        return static
    balanced = _eplb(p, layout)
    return balanced if _max_share(p, balanced) <= _max_share(p, static) else static


def _static(n: int, dies: int) -> Placement:
    """One copy per expert, consecutive ids on consecutive dies; redundant slots stay empty."""
    base, extra = divmod(n, dies)
    die = np.repeat(np.arange(dies), [base + (1 if d < extra else 0) for d in range(dies)])
    return Placement(slot_expert=np.arange(n), slot_die=die, replicas=np.ones(n, dtype=int), num_dies=dies)


def _max_share(p: np.ndarray, pl: Placement) -> float:
    share = p[pl.slot_expert] / pl.replicas[pl.slot_expert]
    return float(np.bincount(pl.slot_die, weights=share, minlength=pl.num_dies).max())


def _eplb(p: np.ndarray, layout: ExpertLayout) -> Placement:
    per_die, dies = layout.routed_slots_per_die, layout.routed_dies
    n = p.size
    copies = _replicas(p, max(per_die * dies - n, 0))
    experts = np.repeat(np.arange(n), copies)
    loads = p[experts] / copies[experts]
    order = np.argsort(-loads, kind="stable")
    die_load, free = np.zeros(dies), np.full(dies, per_die)
    slot_die = np.empty(experts.size, dtype=int)
    for s in order:  # longest-processing-time packing under the slot capacity
        open_dies = np.flatnonzero(free > 0)
        d = open_dies[np.argmin(die_load[open_dies])]
        slot_die[s] = d
        die_load[d] += loads[s]
        free[d] -= 1
    return Placement(slot_expert=experts, slot_die=slot_die, replicas=copies, num_dies=dies)


@lru_cache(maxsize=64)
def _popularity(profile: RoutingProfile, n: int, k: int) -> np.ndarray:
    p = popularity(profile, n, k)
    p.setflags(write=False)  # shared by every cached caller
    return p


@lru_cache(maxsize=64)
def _placement(profile: RoutingProfile, layout: ExpertLayout, eplb: Eplb, n: int, k: int) -> Placement:
    return place(_popularity(profile, n, k), layout, eplb)


@lru_cache(maxsize=4096)
def sampled_busiest_factor(
    profile: RoutingProfile, layout: ExpertLayout, eplb: Eplb, n: int, k: int, tokens: float, requests: float
) -> float:
    """The expected busiest-die load over the mean from ``SAMPLES`` seeded draws of a batch of ``tokens``
    (rounded by ``cost.expert_load.sig``) from ``requests`` requests; ``cost.expert_load.busiest_factor`` is
    the entry point (it handles perfect EPLB and looks up the stored table first)."""
    pl = _placement(profile, layout, eplb, n, k)
    p = _popularity(profile, n, k)
    pairs = max(round(tokens * k), 1)
    rng = np.random.default_rng(SEED)
    c = profile.concentration
    if np.isfinite(c):
        # The batch mix is the mean of ``requests`` Dirichlet(c·p) draws; a single Dirichlet with
        # concentration requests·(c+1) − 1 has the same mean and covariance.
        alpha = max(requests * (c + 1.0) - 1.0, 1e-6) * p
        mix = rng.dirichlet(np.maximum(alpha, 1e-12), size=SAMPLES)
        mix /= mix.sum(axis=1, keepdims=True)
    else:
        mix = np.broadcast_to(p, (SAMPLES, n))
    counts = rng.multinomial(pairs, mix).astype(float)
    per_slot = counts[:, pl.slot_expert] / pl.replicas[pl.slot_expert]
    on_die = np.zeros((pl.slot_die.size, pl.num_dies))
    on_die[np.arange(pl.slot_die.size), pl.slot_die] = 1.0
    die_loads = per_slot @ on_die
    mean = pairs / pl.num_dies
    return float(die_loads.max(axis=1).mean() / mean)


def die_loads(profile: RoutingProfile, layout: ExpertLayout, eplb: Eplb, *, num_experts: int, top_k: int) -> np.ndarray:
    """Long-run share of routed pairs per die under the placement (sums to 1): what EPLB balances."""
    if eplb == Eplb.PERFECT:
        return np.full(layout.routed_dies, 1.0 / layout.routed_dies)
    p = popularity(profile, num_experts, top_k)
    pl = place(p, layout, eplb)
    return np.bincount(pl.slot_die, weights=p[pl.slot_expert] / pl.replicas[pl.slot_expert], minlength=pl.num_dies)
