from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cloudmatrix.serving.ems import ContextCache, hit_tokens
from cloudmatrix.workload.spec import ArrivalSpec, LengthSpec, ReuseSpec, Workload, WorkloadSpec, generate

DATA = Path(__file__).resolve().parents[1] / "data"


def _replay(w: Workload, cache_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Hit tokens and input tokens per request, each prompt looked up and then stored, in arrival order."""
    assert w.hash_ids is not None
    cache = ContextCache(cache_blocks)
    hits = np.zeros(w.num_requests)
    for rid, hashes in enumerate(w.hash_ids):
        hits[rid] = hit_tokens(cache.lookup(hashes).blocks, w.hash_block_tokens, int(w.input_len[rid]))
        cache.store(hashes)
    return hits, w.input_len.astype(float)


@pytest.mark.parametrize("fraction", [0.125, 0.5, 0.9])
def test_hit_rate_matches_the_reuse_fraction(fraction: float) -> None:
    groups, n = 16, 2000
    spec = WorkloadSpec(reuse=ReuseSpec(fraction=fraction, groups=groups, block_tokens=512))
    w = generate(spec, seed=3, num_requests=n)
    hits, tokens = _replay(w, cache_blocks=4000)  # far more than the 16 groups' shared blocks
    shared = np.floor(fraction * 4096 / 512) * 512  # block-rounded: 0.9 -> 7 of 8 blocks = 0.875
    # exactly: every request hits its group's prefix, except the first request of each group
    assert hits.sum() == pytest.approx((n - groups) * shared)
    warm = slice(200, None)  # by request 200 every group has been seen (p ~ 16 x (15/16)^200 ~ 4e-5)
    assert abs(hits[warm].sum() / tokens[warm].sum() - shared / 4096) < 0.02
    assert abs(shared / 4096 - fraction) <= 512 / 4096


def test_variable_lengths_hit_their_block_rounded_share() -> None:
    spec = WorkloadSpec(input=LengthSpec(kind="uniform", low=2000, high=6000), reuse=ReuseSpec(fraction=0.5, groups=8))
    w = generate(spec, seed=11, num_requests=3000)
    hits, tokens = _replay(w, cache_blocks=20000)
    expected = np.floor(0.5 * tokens / 512) * 512  # a longer prompt can outgrow its group's stored prefix
    warm = slice(300, None)
    assert abs(hits[warm].sum() / tokens[warm].sum() - expected[warm].sum() / tokens[warm].sum()) < 0.02


def test_hash_ids_layout() -> None:
    spec = WorkloadSpec(
        input=LengthSpec(kind="uniform", low=100, high=5000), reuse=ReuseSpec(fraction=0.6, groups=4, block_tokens=256)
    )
    w = generate(spec, seed=1, num_requests=500)
    assert w.hash_ids is not None and w.hash_block_tokens == 256
    max_shared = int(np.floor(0.6 * w.input_len / 256).max())
    seen: dict[int, int] = {}
    for L, hashes in zip(w.input_len, w.hash_ids, strict=True):
        assert len(hashes) == -(-int(L) // 256)  # Mooncake-style: the last block may be partial
        k = int(np.floor(0.6 * L / 256))
        shared, own = hashes[:k], hashes[k:]
        if k:  # a group's prefix is consecutive ids
            assert shared == list(range(shared[0], shared[0] + k))
        assert all(h < 4 * max_shared for h in shared) and all(h >= 4 * max_shared for h in own)
        for h in own:  # a request's own blocks appear nowhere else
            assert seen.setdefault(h, id(hashes)) == id(hashes)
    groups = {hashes[0] // max_shared for hashes in w.hash_ids if hashes and hashes[0] < 4 * max_shared}
    assert groups == {0, 1, 2, 3}


def test_reuse_is_seeded_and_leaves_lengths_alone() -> None:
    spec = WorkloadSpec(reuse=ReuseSpec(fraction=0.5))
    a, b = generate(spec, seed=5, num_requests=50), generate(spec, seed=5, num_requests=50)
    plain = generate(WorkloadSpec(), seed=5, num_requests=50)
    assert a.hash_ids == b.hash_ids and generate(spec, seed=6, num_requests=50).hash_ids != a.hash_ids
    assert np.array_equal(a.input_len, plain.input_len) and np.array_equal(a.arrival_s, plain.arrival_s)
    assert plain.hash_ids is None
    closed_spec = WorkloadSpec(reuse=ReuseSpec(fraction=0.5), arrivals=ArrivalSpec(kind="closed", concurrency=4))
    closed = generate(closed_spec, 5, 10)
    assert closed.hash_ids is not None and closed.concurrency == 4


def test_zero_reuse_shares_nothing() -> None:
    w = generate(WorkloadSpec(reuse=ReuseSpec(fraction=0.0)), seed=0, num_requests=100)
    assert w.hash_ids is not None
    flat = [h for hashes in w.hash_ids for h in hashes]
    assert len(flat) == len(set(flat)) == 800


def test_trace_block_size() -> None:
    w = generate(WorkloadSpec(trace=str(DATA / "mooncake_sample.jsonl")), seed=0, num_requests=0)
    assert w.hash_block_tokens == 512 and w.hash_ids is not None
    w = generate(WorkloadSpec(trace=str(DATA / "mooncake_sample.jsonl"), trace_block_tokens=256), 0, 0)
    assert w.hash_block_tokens == 256


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"reuse": {"fraction": 1.5}}, "reuse.fraction"),
        ({"reuse": {"fraction": 0.5, "block_tokens": 8}}, "reuse.block_tokens"),
        ({"reuse": {"fraction": 0.5, "block_tokens": 8192}}, "reuse.block_tokens"),
        ({"reuse": {"fraction": 0.5, "groups": 0}}, "reuse.groups"),
        ({"trace_block_tokens": 4}, "trace_block_tokens"),
    ],
)
def test_bad_reuse_specs_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        WorkloadSpec.model_validate(data)
    assert ".".join(str(p) for p in err.value.errors()[0]["loc"]) == field


def test_reuse_and_trace_do_not_mix() -> None:
    with pytest.raises(ValidationError, match="trace brings its own hash_ids"):
        WorkloadSpec(trace="x.jsonl", reuse=ReuseSpec(fraction=0.5))
