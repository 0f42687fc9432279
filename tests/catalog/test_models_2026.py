"""The models of 2026 in the catalog: parameter counts against the published totals, cache bytes per token
and per layer, and refusals by name of what a config has that the twin cannot price."""

import json
from pathlib import Path

import pytest

from cloudmatrix.catalog.models import MODELS_DIR, load_model, model_ids, parse_config
from cloudmatrix.errors import ConfigError

# (catalog id, published total, source). Figures published to three significant figures are held to 1 %.
PUBLISHED_TOTALS = [
    ("qwen3-30b-a3b", 30.5e9, "HF Qwen/Qwen3-30B-A3B model card: 30.5B in total, 3.3B activated"),
    ("qwen3-32b", 32.8e9, "HF Qwen/Qwen3-32B model card: 32.8B"),
    ("minimax-m2", 230e9, "HF MiniMaxAI/MiniMax-M2 model card: 230B total, 10B active"),
    ("deepseek-v4-flash", 284e9, "DeepSeek-V4 model card and technical report: 284B total, 13B activated"),
]


@pytest.mark.parametrize(("model_id", "published", "source"), PUBLISHED_TOTALS)
def test_total_parameters_are_within_one_percent_of_the_published_total(
    model_id: str, published: float, source: str
) -> None:
    assert load_model(model_id).total_params() == pytest.approx(published, rel=0.01), source


def test_deepseek_v4_pro_counts_round_to_the_published_figures() -> None:
    """DeepSeek-V4 model card: V4-Pro 1.6T total, 49B activated. The total is published to two significant
    figures: the count (main model, MTP layer excluded as for V4-Flash's 284B) rounds to it, 1.7 % below the
    rounded figure; the activated count is within 1 %."""
    pro = load_model("deepseek-v4-pro")
    assert round(pro.total_params() / 1e12, 1) == 1.6
    assert pro.total_params() == pytest.approx(1.573e12, rel=0.001)
    assert pro.active_params() == pytest.approx(49e9, rel=0.01)
    assert load_model("deepseek-v4-flash").active_params() == pytest.approx(13e9, rel=0.03)  # "13B": 2 figures


def test_the_acceptance_models_are_listed() -> None:
    listed = set(model_ids())
    assert {"deepseek-v4-flash", "deepseek-v4-pro", "qwen3-30b-a3b", "qwen3-32b", "minimax-m2"} <= listed
    assert "qwen3-next-80b-a3b" in listed


def test_gqa_cache_bytes_per_token_are_k_and_v_of_every_kv_head_in_every_layer() -> None:
    # per layer: 2 (K and V) x KV heads x head_dim x 2 bytes (BF16)
    assert load_model("qwen3-30b-a3b").kv_bytes_per_token(2.0) == 48 * 2 * 4 * 128 * 2
    assert load_model("qwen3-32b").kv_bytes_per_token(2.0) == 64 * 2 * 8 * 128 * 2
    assert load_model("minimax-m2").kv_bytes_per_token(2.0) == 62 * 2 * 8 * 128 * 2


def test_deepseek_v4_cache_per_token_is_one_entry_per_m_tokens_and_csas_index_keys() -> None:
    """Per token per layer (BF16 entries): CSA 512/4 values (256 B) + 132/4 B of index keys = 289 B;
    HCA 512/128 values = 8 B; the window (128 x 512 x 2 B) is per sequence, not per token."""
    flash, pro = load_model("deepseek-v4-flash"), load_model("deepseek-v4-pro")
    assert flash.compressed is not None and pro.compressed is not None
    assert (flash.compressed.csa_layers, flash.compressed.hca_layers) == (21, 20)
    assert (pro.compressed.csa_layers, pro.compressed.hca_layers) == (30, 31)
    assert flash.kv_bytes_per_token(2.0) == 21 * 289 + 20 * 8
    assert pro.kv_bytes_per_token(2.0) == 30 * 289 + 31 * 8
    window = 43 * 128 * 512 * 2
    # 128 tokens: 32 CSA entries of 512 x 2 B and their 32 index keys; one HCA entry of 512 x 2 B
    assert flash.kv_bytes(128, 2.0) == window + 21 * 32 * (1024 + 132) + 20 * 1024
    n = 1 << 17
    assert flash.kv_bytes(2 * n, 2.0) - flash.kv_bytes(n, 2.0) == pytest.approx(n * flash.kv_bytes_per_token(2.0))


def _v4(**changes: object) -> dict:
    data = json.loads((MODELS_DIR / "deepseek-v4-flash.json").read_text())
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"compress_ratios": [0, 2] + [4] * 42}, "compress_ratios value 2"),
        ({"compress_ratios": [4] * 10}, "compress_ratios has 10 entries"),
        ({"o_groups": None}, "lacks field o_groups"),
        ({"sliding_window": None}, "lacks field sliding_window"),
        ({"num_key_value_heads": 8}, "num_key_value_heads 8"),
        ({"o_groups": 7}, "o_groups 7"),
        ({"kv_source_layer_ids": [2, 8]}, "field kv_source_layer_ids"),
        ({"index_source_layer_ids": [2, 8]}, "field index_source_layer_ids"),
        ({"engram_layer_ids": [1, 14]}, "field engram_layer_ids"),
    ],
)
def test_what_a_v4_config_has_that_the_twin_cannot_price_is_refused_by_name(changes: dict, named: str) -> None:
    data = {k: v for k, v in _v4(**changes).items() if v is not None}
    with pytest.raises(ConfigError, match=named):
        parse_config("v4", data)


def test_hyper_connections_without_compressed_attention_and_other_unpriced_fields_are_refused() -> None:
    base = json.loads((MODELS_DIR / "qwen3-30b-a3b.json").read_text())
    with pytest.raises(ConfigError, match="field hc_mult"):
        parse_config("q", {**base, "hc_mult": 4})
    with pytest.raises(ConfigError, match="field zero_expert_num .*zero-computation"):
        parse_config("q", {**base, "zero_expert_num": 256})
    with pytest.raises(ConfigError, match="linear attention .*lacks field linear_num_key_heads"):
        parse_config("q", {**base, "linear_num_value_heads": 32})


def test_every_shipped_config_names_its_source() -> None:
    import yaml

    index = yaml.safe_load((MODELS_DIR / "index.yaml").read_text())
    for model_id, entry in index.items():
        assert entry["source"].strip(), model_id
        assert Path(MODELS_DIR / entry["file"]).is_file(), model_id


def test_qwen3_next_counts_and_its_state_beside_a_cache_of_its_full_attention_layers() -> None:
    """HF Qwen/Qwen3-Next-80B-A3B-Instruct model card: 80B in total; 48 layers, 12 x (3 Gated DeltaNet, 1 gated
    attention); Gated DeltaNet 32 value heads and 16 query/key heads of 128; attention 16 query and 2 KV
    heads of 256; 512 experts, 10 routed and 1 shared of 512."""
    m = load_model("qwen3-next-80b-a3b")
    assert m.total_params() == pytest.approx(80e9, rel=0.01)
    assert m.linear is not None and len(m.linear.layer_ids) == 36 and 3 not in m.linear.layer_ids
    assert m.num_full_attention_layers == 12
    assert m.kv_bytes_per_token(2.0) == 12 * 2 * 2 * 256 * 2  # K and V of 2 heads of 256, BF16
    state = 32 * 128 * 128 + (2 * 16 * 128 + 32 * 128) * 3  # recurrent state + the convolution's last 3 inputs
    assert m.linear.state_elems() == state
    assert m.kv_bytes(1, 2.0) == m.kv_bytes_per_token(2.0) + 36 * state * 2
    assert m.kv_bytes(8192, 2.0) - m.kv_bytes(4096, 2.0) == 4096 * m.kv_bytes_per_token(2.0)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"linear_key_head_dim": None}, "lacks field linear_key_head_dim"),
        ({"full_attention_interval": None}, "lacks field full_attention_interval"),
        ({"shared_expert_intermediate_size": 1024}, "shared_expert_intermediate_size 1024"),
        ({"linear_attn_config": {"num_heads": 32}}, "field linear_attn_config"),
        ({"layer_types": ["linear_attention"] * 3}, "layer_types has 3 entries"),
    ],
)
def test_what_a_hybrid_config_has_that_the_twin_cannot_price_is_refused_by_name(changes: dict, named: str) -> None:
    base = json.loads((MODELS_DIR / "qwen3-next-80b-a3b.json").read_text())
    data = {k: v for k, v in {**base, **changes}.items() if v is not None}
    with pytest.raises(ConfigError, match=named):
        parse_config("next", data)


def test_kimi_k2_5_is_its_language_model_under_its_own_name_and_other_wrappers_are_refused() -> None:
    """HF moonshotai/Kimi-K2.5 model card: 1T total, 32B activated (K2's language model; the 400M MoonViT
    vision tower runs only for images and is not priced)."""
    k25 = load_model("kimi-k2.5")
    assert k25.id == "kimi-k2.5"
    assert k25.total_params() == pytest.approx(load_model("kimi-k2").total_params())
    assert k25.active_params() == pytest.approx(32e9, rel=0.02)
    wrapper = {"architectures": ["SomeVLForConditionalGeneration"], "text_config": {"hidden_size": 8}}
    with pytest.raises(ConfigError, match="field text_config of architecture SomeVLForConditionalGeneration"):
        parse_config("vl", wrapper)
    with pytest.raises(ConfigError, match="text_config must be a JSON object"):
        parse_config("vl", {"architectures": ["KimiK25ForConditionalGeneration"], "text_config": [1]})
