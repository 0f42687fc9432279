"""Expert load model: popularity, EPLB placement and the busiest-die factor (issue 5)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.routing import RoutingProfile, model_routing, parse_routing
from cloudmatrix.cost.expert_load import busiest_factor
from cloudmatrix.cost.experts import die_loads, place, popularity
from cloudmatrix.deploy import Deployment, Eplb, Phase, expert_layout
from cloudmatrix.errors import ConfigError
from cloudmatrix.estimate import estimate

R1 = load_model("deepseek-r1")
UNIFORM = RoutingProfile()


def zipf(s: float, c: float | None = None) -> RoutingProfile:
    return parse_routing(f"zipf:{s}" + (f"@c={c}" if c else ""), UNIFORM)


def test_popularity_sums_to_one_and_respects_top_k_cap() -> None:
    p = popularity(zipf(2.0), 256, 8)
    assert p.sum() == pytest.approx(1.0)
    assert p.max() <= 1 / 8 + 1e-12  # a token picks an expert at most once
    assert np.allclose(popularity(UNIFORM, 256, 8), 1 / 256)


def test_eplb_replicates_the_hottest_experts() -> None:
    lay = expert_layout(R1, 320, None, 32)  # the paper's 256 + 32 redundant + 32 shared
    p = popularity(zipf(1.0), 256, 8)
    pl = place(p, lay, Eplb.DEFAULT)
    assert pl.replicas.sum() == 288 and pl.slot_expert.size == 288
    hottest = np.argsort(-p)[:8]
    assert (pl.replicas[hottest] > 1).all()
    assert np.bincount(pl.slot_die, minlength=lay.routed_dies).max() <= lay.routed_slots_per_die


@settings(max_examples=25, deadline=None)
@given(s=st.floats(0.0, 1.5), ep=st.sampled_from([32, 64, 128, 256, 320]))
def test_eplb_never_worse_than_none(s: float, ep: int) -> None:
    lay = expert_layout(R1, ep, None)
    prof = zipf(round(s, 3))
    kw = {"num_experts": 256, "top_k": 8}
    assert die_loads(prof, lay, Eplb.DEFAULT, **kw).max() <= die_loads(prof, lay, Eplb.NONE, **kw).max() + 1e-12
    sampled = {e: busiest_factor(prof, lay, e, tokens=4096.0, requests=512.0, **kw) for e in (Eplb.DEFAULT, Eplb.NONE)}
    assert sampled[Eplb.DEFAULT] <= sampled[Eplb.NONE] * 1.01


@settings(max_examples=15, deadline=None)
@given(s=st.floats(0.0, 1.0))
def test_enough_redundant_slots_approach_uniform(s: float) -> None:
    kw = {"num_experts": 256, "top_k": 8}
    shares = [
        die_loads(zipf(round(s, 3)), expert_layout(R1, 32, red), Eplb.DEFAULT, **kw).max() * 32
        for red in (32, 256, 768)
    ]
    assert shares[-1] <= 1.05
    assert shares[-1] <= max(shares[0], 1.005)  # more copies never leave it worse than a few slots did


def test_perfect_is_uniform_and_noise_shrinks_with_batch() -> None:
    lay = expert_layout(R1, 320, None, 32)
    kw = {"num_experts": 256, "top_k": 8}
    assert busiest_factor(UNIFORM, lay, Eplb.PERFECT, tokens=1e4, requests=1e4, **kw) == 1.0
    small = busiest_factor(UNIFORM, lay, Eplb.DEFAULT, tokens=3_000, requests=3_000, **kw)
    large = busiest_factor(UNIFORM, lay, Eplb.DEFAULT, tokens=300_000, requests=300_000, **kw)
    assert small > large > 1.0
    # multinomial noise alone: max of 288 dies about mean + sigma * sqrt(2 ln 288)
    mean = 3_000 * 8 / 288
    assert small == pytest.approx(1 + math.sqrt(2 * math.log(288)) / math.sqrt(mean), rel=0.08)


def test_request_concentration_raises_prefill_imbalance() -> None:
    lay = expert_layout(R1, 32, None)
    kw = {"num_experts": 256, "top_k": 8, "tokens": 262_144.0, "requests": 64.0}
    loose = busiest_factor(UNIFORM, lay, Eplb.DEFAULT, **kw)
    tight = busiest_factor(parse_routing("uniform@c=10", UNIFORM), lay, Eplb.DEFAULT, **kw)
    assert loose < 1.02 < tight


def test_factor_is_deterministic() -> None:
    lay = expert_layout(R1, 320, None)
    kw = {"num_experts": 256, "top_k": 8, "tokens": 30_000.0, "requests": 15_000.0}
    assert busiest_factor(zipf(0.5), lay, Eplb.DEFAULT, **kw) == busiest_factor(zipf(0.5), lay, Eplb.DEFAULT, **kw)


def test_catalog_profile_and_overrides() -> None:
    prof = model_routing("deepseek-r1")
    assert prof.popularity == "uniform" and prof.request_concentration is not None
    assert "CALIB" in prof.request_concentration.source
    assert model_routing("llama-3.1-405b").request_concentration is None
    assert parse_routing("zipf:0.4", prof).concentration == prof.concentration  # keeps the catalog's c
    with pytest.raises(ConfigError, match="expected uniform, zipf"):
        parse_routing("pareto", prof)
    with pytest.raises(ConfigError, match="not a number"):
        parse_routing("zipf:x", prof)


def test_histogram_file(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "loads.txt"
    path.write_text("\n".join(str(10 if i < 8 else 1) for i in range(256)))
    prof = parse_routing(str(path), UNIFORM)
    p = popularity(prof, 256, 8)
    assert p[:8].sum() == pytest.approx(80 / 328)
    bad = tmp_path / "short.json"
    bad.write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match="3 experts; the model has 256"):
        popularity(parse_routing(str(bad), UNIFORM), 256, 8)


def test_skew_slows_decode_and_eplb_recovers_part_of_it() -> None:
    def tpot(eplb: Eplb, routing: str) -> float:
        d = Deployment(
            phase=Phase.DECODE, num_chips=160, ep=320, batch_per_chip=96, kv_len=4096, eplb=eplb, routing=routing
        )
        return estimate("cloudmatrix384", "deepseek-r1", d).tpot_s

    uniform, none, eplb = tpot(Eplb.DEFAULT, "uniform"), tpot(Eplb.NONE, "zipf:0.8"), tpot(Eplb.DEFAULT, "zipf:0.8")
    assert uniform < eplb < none
