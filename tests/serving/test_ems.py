import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.errors import ConfigError
from cloudmatrix.serving.ems import (
    CacheHit,
    ContextCache,
    blocks_for_tokens,
    capacity_blocks,
    chain_hashes,
    ems_pool_bytes,
    hit_tokens,
)

prompts = st.lists(st.integers(0, 12), min_size=0, max_size=8)
ops = st.lists(st.tuples(st.booleans(), prompts), max_size=40)


@settings(max_examples=80, deadline=None)
@given(ops, st.integers(0, 6), st.integers(0, 6))
def test_random_operations_keep_the_invariants(sequence, dram, ssd) -> None:
    cache = ContextCache(dram, ssd)
    stored: set[int] = set()
    for is_store, hashes in sequence:
        if is_store:
            cache.store(hashes)
            stored |= set(hashes)
        else:
            before = [cache.contains(h) for h in hashes]
            hit = cache.lookup(hashes)
            # a hit is the leading run of cached blocks, and only of blocks that were stored
            assert all(before[: hit.blocks])
            assert hit.blocks == len(hashes) or not before[hit.blocks]
            assert set(hashes[: hit.blocks]) <= stored
        assert cache.dram_used_blocks <= dram and cache.ssd_used_blocks <= ssd
        assert len(cache) == cache.dram_used_blocks + cache.ssd_used_blocks
        assert not set(cache.dram_lru_order()) & set(cache.ssd_lru_order())
        assert set(cache.dram_lru_order()) | set(cache.ssd_lru_order()) <= stored
    s = cache.stats
    assert s.hit_blocks <= s.looked_up_blocks and 0.0 <= s.hit_rate <= 1.0
    assert s.stored_blocks == len(cache) + s.evictions


def _reference(sequence, dram: int, ssd: int) -> list[tuple[int, int]]:
    """The same two-tier LRU written plainly with lists (most recent last)."""
    d: list[int] = []
    s: list[int] = []
    out = []

    def touch(hashes):
        for h in reversed(hashes):
            for tier in (d, s):
                if h in tier:
                    tier.remove(h)
            d.append(h)
        while len(d) > dram:
            victim = d.pop(0)
            if ssd:
                s.append(victim)
                if len(s) > ssd:
                    s.pop(0)

    for is_store, hashes in sequence:
        if is_store:
            touch(hashes)
            continue
        n_d = n_s = 0
        for h in hashes:
            if h in d:
                n_d += 1
            elif h in s:
                n_s += 1
            else:
                break
        out.append((n_d, n_s))
        touch(hashes[: n_d + n_s])
    return out


@settings(max_examples=60, deadline=None)
@given(ops, st.integers(0, 6), st.integers(0, 6))
def test_matches_a_plain_reference_lru(sequence, dram, ssd) -> None:
    cache = ContextCache(dram, ssd)
    got = []
    for is_store, hashes in sequence:
        if is_store:
            cache.store(hashes)
        else:
            hit = cache.lookup(hashes)
            got.append((hit.dram_blocks, hit.ssd_blocks))
    assert got == _reference(sequence, dram, ssd)


def test_lru_order_and_eviction() -> None:
    cache = ContextCache(dram_blocks=4)
    cache.store([1, 2])
    cache.store([3, 4])
    # a prompt's head is its most recent block, so its tail goes first
    assert cache.dram_lru_order() == [2, 1, 4, 3]
    assert cache.lookup([1, 2, 9]) == CacheHit(dram_blocks=2, ssd_blocks=0)
    assert cache.dram_lru_order() == [4, 3, 2, 1]
    cache.store([5])
    assert not cache.contains(4) and cache.contains(3)
    assert cache.lookup([3, 4]) == CacheHit(1, 0)  # 4 was evicted: the hit stops there
    assert cache.lookup([4, 3]) == CacheHit(0, 0)  # the first miss ends the hit
    s = cache.stats
    assert (s.lookups, s.looked_up_blocks, s.hit_blocks, s.evictions) == (3, 7, 3, 1)
    assert s.hit_rate == pytest.approx(3 / 7)


def test_ssd_demotion_and_promotion() -> None:
    cache = ContextCache(dram_blocks=2, ssd_blocks=2)
    cache.store([1, 2])
    cache.store([3, 4])
    assert cache.dram_lru_order() == [4, 3] and cache.ssd_lru_order() == [2, 1]
    assert cache.tier_of(1) == "ssd" and cache.tier_of(3) == "dram" and cache.tier_of(9) is None
    hit = cache.lookup([1, 2, 5])
    assert hit == CacheHit(dram_blocks=0, ssd_blocks=2) and hit.blocks == 2
    # promoted back to DRAM; the DRAM blocks they displaced went down to SSD
    assert cache.dram_lru_order() == [2, 1] and cache.ssd_lru_order() == [4, 3]
    cache.store([6])  # demotes 2, which pushes 4 out of SSD altogether
    assert cache.ssd_lru_order() == [3, 2] and not cache.contains(4)
    s = cache.stats
    assert (s.ssd_hit_blocks, s.evictions) == (2, 1) and s.demotions == 5


def test_counts_are_classified_before_promotion_moves_blocks() -> None:
    cache = ContextCache(dram_blocks=1, ssd_blocks=4)
    cache.store([2])
    cache.store([1])  # 2 -> SSD
    cache.store([3])  # 1 -> SSD; DRAM holds 3
    assert cache.lookup([3, 1, 2]) == CacheHit(dram_blocks=1, ssd_blocks=2)
    assert cache.dram_lru_order() == [3] and len(cache) == 3


def test_zero_capacity_caches_nothing() -> None:
    cache = ContextCache(0)
    cache.store([1, 2, 3])
    assert len(cache) == 0 and cache.lookup([1]) == CacheHit(0, 0) and cache.stats.evictions == 3
    with pytest.raises(ValueError):
        ContextCache(-1)


def test_block_helpers() -> None:
    assert blocks_for_tokens(2919, 512) == 6  # as the Mooncake trace counts (6 hash_ids)
    assert blocks_for_tokens(512, 512) == 1 and blocks_for_tokens(513, 128) == 5
    assert hit_tokens(4, 512, 4096) == 2048 and hit_tokens(8, 512, 4096) == 4095 and hit_tokens(0, 512, 1) == 0
    assert capacity_blocks(1e9, 512, 35136.0) == int(1e9 // (512 * 35136))
    for bad in (8, 8192):
        with pytest.raises(ValueError):
            blocks_for_tokens(100, bad)
    with pytest.raises(ValueError):
        capacity_blocks(1e9, 512, 0)


def test_chained_hashes_address_prefixes() -> None:
    a, b = chain_hashes([7, 8, 9]), chain_hashes([7, 8, 10])
    c = chain_hashes([6, 8, 9])
    assert a[:2] == b[:2] and a[2] != b[2]
    assert not set(a) & set(c)  # the same block content after a different prefix is a different block
    assert chain_hashes([7, 8, 9]) == a and all(h >= 0 for h in a)


def test_pool_capacity_from_the_catalog() -> None:
    hw = load_hardware("cloudmatrix384")
    cpu, ems = hw.system.cpu, hw.system.ems
    assert ems is not None and ems.dram_share.assumed and cpu.dram_gb_per_socket.assumed
    per_node = cpu.sockets_per_node.value * cpu.dram_gb_per_socket.value * 1e9 * ems.dram_share.value
    assert ems_pool_bytes(hw, 48) == pytest.approx(48 * per_node) == pytest.approx(49.152e12)
    assert ems_pool_bytes(hw, 0) == 0
    kv = load_model("deepseek-r1").kv_bytes_per_token(1.0)  # INT8 latent KV, 35,136 B per token
    blocks = capacity_blocks(ems_pool_bytes(hw, 48), int(ems.block_tokens.value), kv)
    assert 2.5e6 < blocks < 2.9e6  # ~18 MB per 512-token block
    with pytest.raises(ConfigError, match="no ems section"):
        ems_pool_bytes(load_hardware("hgx-h800"), 1)
