"""DeepSeek Sparse Attention (DeepSeek-V3.2, GLM-5): parameter counts against the model cards, KV bytes with
the indexer keys, the indexer and the sparse attention as separate ops with their closed forms, and the
long-context shape DeepSeek published for V3.2-Exp against V3.1 (cost per token vs position, H800)."""

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import MODELS_DIR, ModelSpec, load_model, parse_config
from cloudmatrix.cost.layers import _decode_attention_ops
from cloudmatrix.cost.ops import OpClass
from cloudmatrix.cost.pricing import Pricer
from cloudmatrix.cost.sparse_attention import REDUCE_OPS_PER_HEAD, SELECT_PASSES, causal_attended
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import ConfigError
from cloudmatrix.estimate import estimate

V32 = load_model("deepseek-v3.2")


def test_parameter_counts_match_the_model_cards() -> None:
    ix = V32.attention.indexer
    assert ix is not None and (ix.num_heads, ix.head_dim, ix.topk, ix.own_layers) == (64, 128, 2048, 61)
    # one indexer: wq_b (1536 -> 64 x 128), wk (7168 -> 128), its LayerNorm, weights_proj (7168 -> 64)
    assert ix.params(7168, 1536) == 1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64
    # DeepSeek's 685B counts the MTP layer with its own copies of the embedding and the LM head
    mtp = V32.mtp_layers * (V32.mtp_layer_params() + 2 * V32.vocab * V32.hidden)
    assert V32.total_params() + mtp == pytest.approx(685.40e9, rel=0.01)
    # V3's 36.7B active (DeepSeek README_WEIGHTS) plus the 61 indexers
    assert V32.active_params() - 61 * ix.params(7168, 1536) == pytest.approx(36.7e9, rel=0.01)
    glm = load_model("glm-5")
    assert glm.total_params() == pytest.approx(744e9, rel=0.01)  # GLM-5 report: 744B total, MTP not counted
    # 40B active: GLM counts the matmuls of the layers, not the LM head
    assert glm.active_params() - glm.lm_head_params() == pytest.approx(40e9, rel=0.01)


def test_kv_bytes_per_token_hold_the_indexer_keys() -> None:
    # latent 512 + rope 64 at the KV format, plus 128 one-byte indexer keys and an FP32 scale, per layer
    assert V32.kv_bytes_per_token(1.0) == 61 * (576 + 132)
    assert V32.kv_bytes_per_token(2.0) == 61 * (1152 + 132)
    assert V32.kv_bytes(1000, 1.0) == 1000 * 61 * (576 + 132)
    glm = load_model("glm-5")
    assert glm.kv_bytes_per_token(1.0) == 78 * (576 + 132)
    assert load_model("deepseek-r1").kv_bytes_per_token(1.0) == 61 * 576  # no indexer


def test_causal_attended_caps_at_top_k() -> None:
    ix = V32.attention.indexer
    assert causal_attended(None, 0, 4096) == pytest.approx(2048.5)
    assert causal_attended(ix, 0, 1000) == pytest.approx(500.5)  # all below top-k: dense
    assert causal_attended(ix, 8192, 1000) == 2048  # every position past top-k
    # positions 1..2048 see themselves, the other 2048 see 2048
    assert causal_attended(ix, 0, 4096) == pytest.approx((2049 / 2 * 2048 + 2048 * 2048) / 4096)


def _decode(model: str, context: int, system: str = "cloudmatrix384") -> dict[str, float]:
    d = Deployment(
        phase=Phase.DECODE,
        num_chips=32,
        ep=64,
        batch_per_chip=4,
        input_len=context,
        output_len=1,
        kv_len=context,
        mtp=0,
        kv_precision="int8",
        microbatch=False,
    )
    return estimate(system, model, d).step.breakdown_us


def test_indexer_and_sparse_attention_are_separate_ops_with_closed_forms() -> None:
    b = _decode("deepseek-v3.2", 65536)
    assert {"indexer_proj", "indexer", "indexer_topk", "attention_core"} <= set(b)
    d = Deployment(
        phase=Phase.DECODE,
        num_chips=32,
        ep=64,
        batch_per_chip=4,
        input_len=65536,
        output_len=1,
        kv_len=65536,
        mtp=0,
        kv_precision="int8",
        microbatch=False,
    )
    p = plan(d, load_hardware("cloudmatrix384"), V32)
    ops = {op.name: op for op in _decode_attention_ops(p, 1.0)}
    q, seqs = p.decode_tokens_per_die, p.seqs_per_die
    assert ops["indexer"].flops == pytest.approx(2 * q * 64 * 128 * 65536)
    assert ops["indexer"].hbm_bytes == pytest.approx(seqs * 65536 * 132 + q * 65536 * 4)
    assert ops["indexer"].precision == "int8"  # the 910C has no FP8
    assert ops["attention_core"].flops == pytest.approx(2 * q * 128 * (2 * 512 + 64) * 2048)  # top-k, not 64K
    # the per-head ReLU, weight and sum of the logits: vector work, on the 910C's AIV a third of the scoring
    reduce = ops["indexer_reduce"]
    assert reduce.op_class is OpClass.VECTOR and reduce.flops == pytest.approx(REDUCE_OPS_PER_HEAD * 64 * q * 65536)
    px = Pricer(p.hardware, None)
    assert 0.2 < px.price(reduce).time_s / px.price(ops["indexer"]).time_s < 1.0
    h200 = plan(dataclasses.replace(d, ep=32, kv_precision="fp8", precision="fp8"), load_hardware("hgx-h200"), V32)
    assert {op.name: op for op in _decode_attention_ops(h200, 1.0)}["indexer"].precision == "fp8"


def test_sglang_on_ascend_scores_the_indexer_in_bf16() -> None:
    """SGLang's NPU indexer runs sgl-kernel-npu's BF16-only lightning indexer on BF16 keys (stacks.yaml): twice
    the key bytes read, no scale, BF16 peak; other stacks on the 910C keep INT8, and the KV pool the model's."""
    d = Deployment(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=4, input_len=65536, output_len=1,
                   kv_len=65536, mtp=0, kv_precision="bf16", microbatch=False)  # fmt: skip
    hw = load_hardware("cloudmatrix384")

    def indexer(stack: str | None) -> tuple[str, float, float]:
        p = plan(dataclasses.replace(d, stack=stack), hw, V32)
        op = {o.name: o for o in _decode_attention_ops(p, 1.0)}["indexer"]
        return op.precision, op.hbm_bytes - p.decode_tokens_per_die * 65536 * 4, p.seqs_per_die

    fmt, key_read, seqs = indexer("sglang-ascend")
    assert fmt == "bf16" and key_read == pytest.approx(seqs * 65536 * 256)
    for other in (None, "vllm-ascend"):
        fmt, key_read, seqs = indexer(other)
        assert fmt == "int8" and key_read == pytest.approx(seqs * 65536 * 132)
    assert V32.kv_bytes_per_token(2.0) == 61 * (1152 + 132)  # the pool keeps the model's key


def test_long_context_cost_grows_as_dsa_does() -> None:
    """V3's attention grows with the full MLA term, V3.2's only with the indexer's linear term; DeepSeek's
    V3.2-Exp figure (decode on H800, 8K -> 128K) has V3.2's slope at about 5 % of V3.1's."""

    def attention(model: str, ctx: int) -> float:
        b = _decode(model, ctx)
        return sum(v for k, v in b.items() if k in ("attention_core", "indexer", "indexer_topk"))

    v3 = [attention("deepseek-v3", c) for c in (8192, 32768, 131072)]
    v32 = [attention("deepseek-v3.2", c) for c in (8192, 32768, 131072)]
    slope_v3 = (v3[2] - v3[0]) / (131072 - 8192)
    slope_v32 = (v32[2] - v32[0]) / (131072 - 8192)
    assert slope_v32 < 0.15 * slope_v3
    # both linear in the context (the sparse core is flat past top-k)
    assert (v3[1] - v3[0]) / (32768 - 8192) == pytest.approx(slope_v3, rel=0.05)
    assert (v32[1] - v32[0]) / (32768 - 8192) == pytest.approx(slope_v32, rel=0.05)
    assert _decode("deepseek-v3.2", 8192)["attention_core"] == pytest.approx(
        _decode("deepseek-v3.2", 131072)["attention_core"]
    )


def test_prefill_switches_to_sparse_attention_where_it_is_cheaper() -> None:
    def prefill(model: str, length: int) -> dict[str, float]:
        d = Deployment(phase=Phase.PREFILL, num_chips=16, ep=32, tokens_per_chip=16384, input_len=length)
        return estimate("cloudmatrix384", model, d).step.breakdown_us

    short, long = prefill("deepseek-v3.2", 4096), prefill("deepseek-v3.2", 65536)
    assert "flash_attention" in short and "sparse_attention" not in short  # masked dense MHA
    assert "sparse_attention" in long and "flash_attention" not in long
    assert long["sparse_attention"] < prefill("deepseek-v3", 65536)["flash_attention"] / 3


def test_configs_the_twin_cannot_price_are_refused_by_name(tmp_path: Path) -> None:
    base = json.loads((MODELS_DIR / "deepseek-v3.2.json").read_text())
    cases = [
        ({"architectures": ["MambaForCausalLM"]}, "architecture MambaForCausalLM cannot be priced"),
        ({"compress_ratios": [4, 128]}, r"compress_ratios set\) lacks field o_groups"),
        ({"index_topk": None}, "lacks field index_topk"),
        ({"kv_lora_rank": None, "architectures": None}, "needs MLA"),
        ({"indexer_types": ["full"] * 3}, "indexer_types has 3 entries for 61 layers"),
    ]
    for change, message in cases:
        cfg = {k: v for k, v in {**base, **change}.items() if v is not None}
        with pytest.raises(ConfigError, match=message):
            parse_config("x", cfg)


def test_shared_indexers_follow_the_config() -> None:
    base = json.loads((MODELS_DIR / "deepseek-v3.2.json").read_text())
    shared = parse_config("x", {**base, "indexer_types": ["full" if i % 4 == 0 else "shared" for i in range(61)]})
    assert shared.attention.indexer.own_layers == 16
    assert shared.kv_bytes_per_token(1.0) == 61 * 576 + 16 * 132
    freq = parse_config("x", {**base, "index_topk_freq": 4})
    assert freq.attention.indexer.own_layers == 16


def test_deepseek_v4s_published_config_loads_as_the_catalog_model() -> None:
    """DeepSeek-V4-Flash's config.json (HF deepseek-ai/DeepSeek-V4-Flash, April 2026) is priced as compressed
    attention (cost/compressed_attention.py): the file and the catalog id give the same model."""
    path = Path(__file__).parents[1] / "data" / "deepseek-v4-flash-config.json"
    from_file, catalog = load_model(str(path)), load_model("deepseek-v4-flash")
    assert from_file.compressed == catalog.compressed
    assert from_file.total_params() == catalog.total_params()


def _with_topk(topk: int) -> ModelSpec:
    ix = V32.attention.indexer
    assert ix is not None
    return dataclasses.replace(
        V32, attention=dataclasses.replace(V32.attention, indexer=dataclasses.replace(ix, topk=topk))
    )


def _step_s(model: ModelSpec, phase: Phase, context: int) -> float:
    if phase == Phase.DECODE:
        d = Deployment(phase=phase, num_chips=32, ep=64, batch_per_chip=4, input_len=context, output_len=1,
                       kv_len=context, mtp=1, mtp_acceptance=0.7, kv_precision="int8")  # fmt: skip
    else:
        d = Deployment(phase=phase, num_chips=16, ep=32, tokens_per_chip=16384, input_len=context)
    return estimate("cloudmatrix384", model, d).step.step_s


@settings(max_examples=12, deadline=None)
@given(context=st.integers(min_value=1, max_value=2048), phase=st.sampled_from([Phase.DECODE, Phase.PREFILL]))
def test_a_context_shorter_than_top_k_costs_what_top_k_equal_to_it_costs(context: int, phase: Phase) -> None:
    """Top-k larger than the context selects the whole context: the indexer's selection and the sparse core
    are charged for the tokens there are, exactly as with top-k set to the context."""
    assert _step_s(V32, phase, context) == _step_s(_with_topk(context), phase, context)


def test_the_selection_grows_with_the_context_until_top_k() -> None:
    def op(name: str, context: int) -> float:
        return _decode("deepseek-v3.2", context)[name]

    contexts = (16, 256, 1024, 2048, 4096, 65536)
    topk = [op("indexer_topk", c) for c in contexts]
    core = [op("attention_core", c) for c in contexts]
    assert topk == sorted(topk) and len(set(topk)) == len(topk)  # the scores it reads grow past top-k too
    assert core[:4] == sorted(core[:4]) and len(set(core[:4])) == 4
    assert core[3] == pytest.approx(core[4]) == pytest.approx(core[5])  # the core is flat past top-k
    p = plan(
        Deployment(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=4, input_len=100, output_len=1,
                   kv_len=100, mtp=0, kv_precision="int8", microbatch=False),
        load_hardware("cloudmatrix384"),
        V32,
    )  # fmt: skip
    sel = {o.name: o for o in _decode_attention_ops(p, 1.0)}["indexer_topk"]
    q = p.decode_tokens_per_die
    # the scores read in each selection pass, 100 (not 2,048) indices written
    assert sel.hbm_bytes == pytest.approx(SELECT_PASSES * q * 100 * 4 + q * 100 * 4)
