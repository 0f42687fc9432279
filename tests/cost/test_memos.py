"""The estimate path's memos answer exactly what the computation they skip answers: the busiest-die factor
by exact inputs (a routing profile by identity, so an equal profile made anew shares nothing but the
answer) and the expert layout by the rule's inputs. A memo that answered a different input, or kept a
refusal, fails here."""

import dataclasses
import itertools

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.routing import model_routing, parse_routing
from cloudmatrix.cost import expert_load
from cloudmatrix.deploy import Deployment, Eplb, ExpertLayout, Phase, Plan, _expert_layout, expert_layout, plan
from cloudmatrix.errors import InfeasibleDeploymentError

LAYOUT = ExpertLayout(ep=32, routed_slots_per_die=9, routed_dies=32, shared_dies=0, redundant=32)
SHAPES = [(96.0, 48.0), (192.0, 96.0), (1234.5, 321.0), (16384.0, 4.0)]


def _factor(profile, tokens: float, requests: float, eplb: Eplb = Eplb.DEFAULT) -> float:
    return expert_load.busiest_factor(profile, LAYOUT, eplb, num_experts=256, top_k=8, tokens=tokens, requests=requests)


def test_a_memoised_factor_is_the_computed_one() -> None:
    base = model_routing("deepseek-r1")
    profiles = [base, parse_routing("zipf:1.2", base), parse_routing("uniform@c=4", base)]
    first = {(i, s): _factor(p, *s) for i, p in enumerate(profiles) for s in SHAPES}
    again = {(i, s): _factor(p, *s) for i, p in enumerate(profiles) for s in SHAPES}  # from the memo
    expert_load.clear_cache()
    fresh = {(i, s): _factor(p, *s) for i, p in enumerate(profiles) for s in SHAPES}
    assert first == again == fresh
    assert len({first[(i, SHAPES[0])] for i in range(len(profiles))}) > 1  # the profiles differ: so do factors


def test_an_equal_profile_made_anew_gets_the_same_answer_and_another_profile_its_own() -> None:
    base = model_routing("deepseek-r1")
    copy = base.model_copy()
    other = base.model_copy(update={"request_concentration": None})
    assert copy is not base and copy == base
    for shape in SHAPES:
        assert _factor(copy, *shape) == _factor(base, *shape)
        expert_load.clear_cache()
        alone = _factor(other, *shape)
        expert_load.clear_cache()
        _factor(base, *shape)  # base answered first: other must not take its entry
        assert _factor(other, *shape) == alone


def test_perfect_eplb_and_an_empty_batch_are_one() -> None:
    prof = model_routing("deepseek-r1")
    assert _factor(prof, 96.0, 48.0, Eplb.PERFECT) == 1.0
    assert _factor(prof, 0.0, 0.0) == 1.0


@pytest.mark.parametrize("model_id", ["deepseek-r1", "qwen3-235b-a22b", "gpt-oss-120b", "kimi-k2"])
def test_a_memoised_layout_is_the_rule_applied(model_id: str) -> None:
    moe = load_model(model_id).moe
    assert moe is not None
    for ep in (1, 2, 8, 32, 64, 144, 256, 288, 320, 384):
        for redundant, shared in itertools.product((None, 0, 16, 32), (None, 0, 4, 32)):
            try:
                want = _expert_layout(load_model(model_id), ep, redundant, shared)
            except InfeasibleDeploymentError:
                for _ in range(2):  # a refusal is never memoised as an answer
                    with pytest.raises(InfeasibleDeploymentError):
                        expert_layout(load_model(model_id), ep, redundant, shared)
                continue
            for _ in range(2):
                assert expert_layout(load_model(model_id), ep, redundant, shared) == want


def test_the_layout_depends_on_shared_experts() -> None:
    r1 = load_model("deepseek-r1")
    assert r1.moe is not None and r1.moe.num_shared
    no_shared = dataclasses.replace(r1, moe=dataclasses.replace(r1.moe, num_shared=0))
    assert expert_layout(r1, 320, None).shared_dies == 36  # 320 x 1 / (8 + 1)
    assert expert_layout(no_shared, 320, None).shared_dies == 0
    top4 = dataclasses.replace(r1, moe=dataclasses.replace(r1.moe, top_k=4))
    assert expert_layout(top4, 320, None).shared_dies == 64  # the rule reads top-k too: 320 x 1 / (4 + 1)


def _plan_figures(p: object) -> dict[str, object]:
    names = ("cached_len", "tp", "cp", "moe_group", "moe_comm", "kv_shards", "decodes", "decode_tokens_per_die")
    more = ("phase", "weight_bytes", "compute_precision", "kv_bytes", "dispatch_bytes", "activation_bytes")
    return {name: getattr(p, name) for name in names + more}


def _recomputed(p: Plan) -> dict[str, object]:
    """Each figure computed by its own function, bypassing the kept value."""
    return {name: type(p).__dict__[name].compute(p) for name in _plan_figures(p)}


@pytest.mark.parametrize(
    "change",
    [
        {"tokens_per_die": 7.0, "chunk_tokens_per_die": 3.0},
        {"deployment": {"precision": "bf16", "kv_precision": "fp8", "tp": 2, "moe_tp": 2}},
        {"deployment": {"phase": Phase.PREFILL, "cached_fraction": 0.5, "tokens_per_chip": 4096}},
        {"layout": None},
    ],
)
def test_a_plans_kept_figures_are_its_own_after_replace(change: dict) -> None:
    """A plan keeps its derived figures once read; a plan made from it by ``dataclasses.replace`` (as the MTP
    draft and the EAGLE-3 passes are) computes its own, never the original's."""
    hw, model = load_hardware("cloudmatrix384"), load_model("deepseek-r1")
    base = plan(Deployment(phase=Phase.DECODE, num_chips=16, batch_per_chip=32, mtp=1, mtp_acceptance=0.7), hw, model)
    before = _plan_figures(base)  # read, so kept
    assert _plan_figures(base) == before == _recomputed(base)
    dep = change.get("deployment")
    fields = {**change, "deployment": dataclasses.replace(base.deployment, **dep)} if dep else change
    other = dataclasses.replace(base, **fields)
    assert _plan_figures(other) == _recomputed(other)
    assert _plan_figures(other) != before
    assert _plan_figures(base) == before
