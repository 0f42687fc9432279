import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.models import load_model, model_ids, parse_config
from cloudmatrix.errors import ConfigError, UnknownIdError


def test_deepseek_v3_counts() -> None:
    m = load_model("deepseek-v3")
    assert m.total_params() == pytest.approx(671e9, rel=0.01)
    assert m.active_params() == pytest.approx(36.7e9, rel=0.01)  # DeepSeek's 36.7B (README_WEIGHTS)
    assert m.kv_bytes_per_token(2.0) == 70_272
    assert m.kv_bytes_per_token(1.0) == 35_136
    assert (m.num_dense_layers, m.num_moe_layers, m.mtp_layers) == (3, 58, 1)
    assert m.mtp_layer_params() == pytest.approx(11.5e9, rel=0.02)


def test_other_models() -> None:
    assert load_model("llama-3.1-405b").total_params() == pytest.approx(405e9, rel=0.01)
    assert load_model("llama-3.1-405b").kv_bytes_per_token(2.0) == 2 * 258_048
    q = load_model("qwen3-235b-a22b")
    assert q.total_params() == pytest.approx(235e9, rel=0.01)
    assert q.active_params() == pytest.approx(22e9, rel=0.03)
    g = load_model("gpt-oss-120b")
    assert g.total_params() == pytest.approx(117e9, rel=0.01)
    assert g.kv_bytes(4096, 2.0) < g.kv_bytes_per_token(2.0) * 4096  # sliding layers keep 128 tokens
    assert load_model("kimi-k2").total_params() == pytest.approx(1.03e12, rel=0.01)
    assert load_model("deepseek-r1").total_params() == load_model("deepseek-v3").total_params()
    assert len(model_ids()) == 16


def test_local_config_path(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "hidden_size": 1024,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "vocab_size": 1000,
                "intermediate_size": 4096,
            }
        )
    )
    m = load_model(str(path))
    assert m.total_params() == 4 * (4 * 1024 * 1024 + 3 * 1024 * 4096 + 2 * 1024) + 2 * 1000 * 1024 + 1024


def test_malformed_config_names_the_field(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"hidden_size": -5, "num_hidden_layers": 4, "num_attention_heads": 8, "vocab_size": 10}))
    with pytest.raises(ConfigError, match="hidden_size"):
        load_model(str(path))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model(str(tmp_path / "broken.json"))
    with pytest.raises(UnknownIdError, match="deepseek-r1"):
        load_model("gpt-17")


@settings(max_examples=60, deadline=None)
@given(
    hidden=st.integers(64, 8192),
    layers=st.integers(1, 128),
    heads=st.sampled_from([1, 2, 4, 8, 16, 32]),
    kv_div=st.sampled_from([1, 2, 4]),
    vocab=st.integers(100, 300_000),
    experts=st.integers(0, 64),
    top_k=st.integers(1, 8),
)
def test_params_are_positive_and_monotone(hidden, layers, heads, kv_div, vocab, experts, top_k) -> None:
    cfg = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(heads // kv_div, 1),
        "vocab_size": vocab,
        "intermediate_size": 4 * hidden,
    }
    if experts:
        cfg.update(num_experts=experts, num_experts_per_tok=min(top_k, experts), moe_intermediate_size=hidden)
    m = parse_config("p", cfg)
    deeper = parse_config("p", {**cfg, "num_hidden_layers": layers + 1})
    assert 0 < m.active_params() <= m.total_params() + m.hidden
    assert deeper.total_params() > m.total_params()
    assert m.kv_bytes(10, 2.0) == 10 * m.kv_bytes_per_token(2.0)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads"]),
        st.one_of(st.integers(-5, 0), st.text(max_size=3), st.none()),
    )
)
def test_arbitrary_bad_configs_raise_config_error(data) -> None:
    with pytest.raises(ConfigError):
        parse_config("bad", data)
