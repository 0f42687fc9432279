"""The stored expert-load table is a lookup of the sampled computation, not a fit: every entry is what
``cost.experts`` samples for its key, and a shape missing from the table is sampled."""

from cloudmatrix.catalog.expert_loads import stored_factors
from cloudmatrix.catalog.routing import model_routing
from cloudmatrix.cost import expert_load
from cloudmatrix.cost.experts import sampled_busiest_factor
from cloudmatrix.deploy import Eplb, ExpertLayout


def _profiles() -> dict:
    return {expert_load._profile_text(p): p for p in map(model_routing, ("deepseek-r1", "kimi-k2", "qwen3-235b-a22b"))}


def _parse(key: str) -> tuple:
    digest, layout, eplb, n, k, tokens, requests = key.split("|")
    ep, per_die, dies, shared, redundant = map(int, layout.split("/"))
    lay = ExpertLayout(ep=ep, routed_slots_per_die=per_die, routed_dies=dies, shared_dies=shared, redundant=redundant)
    return digest, lay, Eplb(eplb), int(n), int(k), float(tokens), float(requests)


def test_the_table_covers_the_shipped_workflows() -> None:
    assert len(stored_factors()) >= 500


def test_stored_factors_are_the_sampled_ones() -> None:
    """Every third entry (in key order, so every profile, layout and phase is represented) is sampled afresh."""
    profiles = _profiles()
    factors = dict(list(stored_factors().items())[::3])
    checked = 0
    for key, stored in factors.items():
        digest, lay, eplb, n, k, tokens, requests = _parse(key)
        if digest not in profiles:  # a profile of a model not listed above: covered by the key test below
            continue
        assert sampled_busiest_factor(profiles[digest], lay, eplb, n, k, tokens, requests) == stored, key
        checked += 1
    assert checked == len(factors)


def test_a_shape_off_the_table_is_sampled_and_recorded() -> None:
    prof = model_routing("deepseek-r1")
    lay = ExpertLayout(ep=32, routed_slots_per_die=9, routed_dies=32, shared_dies=0, redundant=32)
    key = expert_load.factor_key(prof, lay, Eplb.DEFAULT, 256, 8, 12340.0, 77.0)  # 12,345 to 4 figures
    assert key not in stored_factors()
    got = expert_load.busiest_factor(prof, lay, Eplb.DEFAULT, num_experts=256, top_k=8, tokens=12345, requests=77)
    assert got == sampled_busiest_factor(prof, lay, Eplb.DEFAULT, 256, 8, 12340.0, 77.0)
    assert expert_load.sampled[key] == got


def test_the_key_changes_with_every_number_of_the_profile() -> None:
    base = model_routing("deepseek-r1")
    other = base.model_copy(update={"request_concentration": None})
    assert expert_load._profile_text(base) != expert_load._profile_text(other)
