"""LongCat-Flash and its zero-computation experts: parameter counts against the published 560B total and 27B
mean activation, the expected FFN experts per token in closed form, identity experts with no weights, no
FLOPs and no dispatch but a router column each, MLA cache bytes per token, and refusals by name."""

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import MODELS_DIR, load_model, parse_config
from cloudmatrix.catalog.zero_experts import ffn_experts_per_token
from cloudmatrix.cost.moe import moe_ffn
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import ConfigError

CONFIG = json.loads((MODELS_DIR / "longcat-flash.json").read_text())


def test_parameters_match_the_published_total_and_mean_activation() -> None:
    """LongCat-Flash technical report (arXiv 2509.01322) and model card: 560B total, 18.6B-31.3B activated
    per token, 27B on average."""
    m = load_model("longcat-flash")
    assert m.total_params() == pytest.approx(560e9, rel=0.01)
    assert m.active_params() == pytest.approx(27e9, rel=0.01)
    none = dataclasses.replace(m, moe=dataclasses.replace(m.moe, top_k=0)).active_params()
    every = dataclasses.replace(m, moe=dataclasses.replace(m.moe, top_k=12)).active_params()
    assert none == pytest.approx(18.6e9, rel=0.01) and every == pytest.approx(31.3e9, rel=0.01)  # the range


def test_layout_and_cache() -> None:
    m = load_model("longcat-flash")
    assert (m.num_layers, m.num_dense_layers, m.num_moe_layers) == (56, 28, 28)  # two attentions per layer
    assert (m.moe.num_routed, m.moe.num_shared, m.moe.top_k, m.moe.router_top_k) == (512, 6, 8, 12)
    assert m.kv_bytes_per_token(2.0) == 56 * (512 + 64) * 2  # MLA latent + rope key, 56 attentions
    assert m.router_params() == 6144 * (512 + 256)  # the identity experts' router columns


def test_expected_ffn_experts_in_closed_form() -> None:
    # (27 - 18.69) / 1.057 = 7.86 FFN experts per token: 8 of the 12 slots, 4 go to identity experts
    assert ffn_experts_per_token(mean_active=27e9, no_expert_active=18.69e9, expert_params_all_layers=1.057e9,
                                 top_k=12) == 8  # fmt: skip


@given(st.floats(0, 1e12), st.floats(0, 1e12), st.floats(1e6, 1e10), st.integers(1, 64))
def test_expected_ffn_experts_stay_within_the_router_slots(mean, base, per_expert, top_k) -> None:
    k = ffn_experts_per_token(mean_active=mean, no_expert_active=base, expert_params_all_layers=per_expert,
                              top_k=top_k)  # fmt: skip
    assert 0 <= k <= top_k
    more = ffn_experts_per_token(mean_active=mean + per_expert, no_expert_active=base,
                                 expert_params_all_layers=per_expert, top_k=top_k)  # fmt: skip
    assert more >= k


def test_identity_experts_have_no_weights_only_router_columns() -> None:
    without = parse_config("longcat-no-zero", CONFIG | {"zero_expert_num": 0})
    with_zero = load_model("longcat-flash")
    assert with_zero.total_params() - without.total_params() == 28 * 6144 * 256
    assert without.moe.top_k == 12  # no identity experts: every slot is an FFN expert


def _moe_ops(model) -> dict:
    hw = load_hardware("hgx-h800")
    d = Deployment(phase=Phase.DECODE, num_chips=16, batch_per_chip=32, precision="fp8", input_len=2048)
    return {op.name: op for op in moe_ffn(plan(d, hw, model), 1.0)}


def test_identity_experts_cost_only_their_router_columns() -> None:
    """Against the same model without identity experts (top-8 FFN experts): every MoE op is identical (no
    FLOPs, weights or dispatched messages for the identity slots) but the router GEMM, wider by 256
    columns; and 8 FFN experts cost less than 12."""
    longcat = load_model("longcat-flash")
    bare = dataclasses.replace(longcat, moe=dataclasses.replace(longcat.moe, zero_experts=0, router_top_k=None))
    with_zero, without = _moe_ops(longcat), _moe_ops(bare)
    assert with_zero.keys() == without.keys()
    for name, op in with_zero.items():
        if name != "gate":
            assert op == without[name], name
    tokens = 32 * 1.0  # decode tokens per die (one die per H800)
    assert with_zero["gate"].flops - without["gate"].flops == pytest.approx(2 * tokens * 6144 * 256)
    all_ffn = dataclasses.replace(longcat, moe=dataclasses.replace(longcat.moe, top_k=12))
    assert _moe_ops(all_ffn)["experts"].flops > with_zero["experts"].flops


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"zero_expert_type": "linear"}, "zero_expert_type"),
        ({"ngram_vocab_size_ratio": 0.1}, "ngram_vocab_size_ratio"),
        ({"ffn_hidden_size": 12000}, "ffn_hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"moe_topk": True}, "moe_topk"),
        ({"zero_expert_num": -1}, "zero_expert_num"),
    ],
)
def test_what_cannot_be_priced_is_refused_by_name(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_config("longcat", CONFIG | change)


def test_other_zero_expert_architectures_stay_refused() -> None:
    ngram = CONFIG | {"architectures": ["LongcatFlashNgramForCausalLM"], "model_type": "longcat_flash_ngram"}
    with pytest.raises(ConfigError, match="zero_expert_num"):
        parse_config("longcat-ngram", ngram | {"num_hidden_layers": 56})


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**7), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(sorted(CONFIG) + ["num_hidden_layers", "zero_experts"]), VALUES, max_size=4))
def test_hostile_longcat_configs_are_refused_in_one_line_or_priced(change: dict) -> None:
    """Any value in any field: a ModelSpec, or a ConfigError naming the config; never another exception."""
    try:
        spec = parse_config("longcat", CONFIG | change)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("longcat")
    else:
        assert spec.total_params() > 0
