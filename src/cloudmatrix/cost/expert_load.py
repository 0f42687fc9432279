"""The busiest-die factor of a batch (design.md §3 rule 4) through the stored table first: the sampled
computation (``cost.experts``, numpy) runs only for a shape nobody priced before. Both give the same number
(tests/cost/test_expert_loads.py)."""

from __future__ import annotations

from functools import cache, lru_cache

try:  # hashlib's own SHA-256, without the OpenSSL library hashlib loads (about 3 ms of a bare estimate)
    from _sha256 import sha256
except ImportError:  # an interpreter that names it otherwise (3.12: _sha2)
    from hashlib import sha256

from cloudmatrix.catalog.expert_loads import stored_factors
from cloudmatrix.catalog.routing import RoutingProfile
from cloudmatrix.deploy import Eplb, ExpertLayout

# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_PERFECT = Eplb.PERFECT

# Factors this process sampled, by key: what `calibrate --write-expert-loads` stores; it switches the
# stored table off while it samples.
sampled: dict[str, float] = {}
use_stored = True
# Factors already answered, by the exact inputs with the profile and the layout by identity (the entry holds
# both, so their ids are not reused while the entry lives): hashing a routing profile (every field of it) costs
# more than the arithmetic of the estimate around it, and a layout's dataclass hash a few thousand instructions.
_answered: dict[tuple[int, int, Eplb, int, int, float, float], tuple[RoutingProfile, ExpertLayout, float]] = {}
_ANSWERED_LIMIT = 4096


def busiest_factor(
    profile: RoutingProfile,
    layout: ExpertLayout,
    eplb: Eplb,
    *,
    num_experts: int,
    top_k: int,
    tokens: float,
    requests: float,
) -> float:
    """Expected load of the busiest routed die over the mean, for a batch of ``tokens`` tokens (in the EP
    group) from ``requests`` requests. 1 for perfect EPLB."""
    if eplb == _PERFECT or tokens <= 0:
        return 1.0
    key = (id(profile), id(layout), eplb, num_experts, top_k, tokens, requests)
    hit = _answered.get(key)
    if hit is not None and hit[0] is profile and hit[1] is layout:
        return hit[2]
    value = _factor(profile, layout, eplb, num_experts, top_k, sig(tokens), sig(max(requests, 1.0)))
    if len(_answered) >= _ANSWERED_LIMIT:
        _answered.clear()
    _answered[key] = (profile, layout, value)
    return value


@lru_cache(maxsize=4096)
def _factor(profile: RoutingProfile, layout: ExpertLayout, eplb: Eplb, n: int, k: int, t: float, r: float) -> float:
    key = factor_key(profile, layout, eplb, n, k, t, r)
    stored = stored_factors().get(key) if use_stored else None
    if stored is not None:
        return stored
    from cloudmatrix.cost.experts import sampled_busiest_factor  # numpy loads only when routing is sampled

    value = sampled[key] = sampled_busiest_factor(profile, layout, eplb, n, k, t, r)
    return value


def sig(x: float) -> float:
    """Round to 4 significant figures so nearby batch shapes share a cache entry."""
    return float(f"{x:.4g}")


def factor_key(
    profile: RoutingProfile, layout: ExpertLayout, eplb: Eplb, n: int, k: int, tokens: float, requests: float
) -> str:
    """Every input of the sampled factor, as text: the profile's numbers, the layout, EPLB, the model's experts
    and top-k, and the rounded batch shape."""
    lay = f"{layout.ep}/{layout.routed_slots_per_die}/{layout.routed_dies}/{layout.shared_dies}/{layout.redundant}"
    return f"{_profile_text(profile)}|{lay}|{Eplb(eplb).value}|{n}|{k}|{tokens!r}|{requests!r}"


@cache
def _profile_text(profile: RoutingProfile) -> str:
    """The profile's numbers (not its prose) as a short digest: the key changes whenever a number does."""
    numbers = (profile.popularity, profile.zipf_exponent and profile.zipf_exponent.value, profile.histogram)
    return sha256(repr((*numbers, profile.concentration)).encode()).hexdigest()[:16]


def clear_cache() -> None:
    """Forget the factors priced so far in this process (the table is consulted afresh)."""
    _answered.clear()
    _factor.cache_clear()
