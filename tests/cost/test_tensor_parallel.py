"""Tensor-parallel dense models (Llama 3.1 405B): weights and KV split over the group, FLOPs conserved,
all-reduces priced, per-chip accounting unchanged, clear errors where TP does not apply."""

import dataclasses

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.kernels import ACT_BYTES
from cloudmatrix.cost.layers import layer_ops
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.cost.pricing import Pricer
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.estimate import estimate

H200, LLAMA = load_hardware("hgx-h200"), load_model("llama-3.1-405b")
DECODE = Deployment(phase=Phase.DECODE, num_chips=8, batch_per_chip=16, input_len=2048, precision="fp8", tp=8)
PREFILL = Deployment(phase=Phase.PREFILL, num_chips=8, tokens_per_chip=4096, input_len=2048, precision="fp8", tp=8)


def _ops(d: Deployment) -> dict:
    return {op.name: op for op in layer_ops(plan(d, H200, LLAMA), moe=False)}


@pytest.mark.parametrize("base", [DECODE, PREFILL], ids=["decode", "prefill"])
def test_flops_per_group_are_conserved_and_weights_split(base: Deployment) -> None:
    one, eight = _ops(dataclasses.replace(base, tp=1)), _ops(base)
    for name in ("qkv_proj", "o_proj", "dense_ffn"):
        # the group computes what one die would for its batch: each of 8 dies does 1/8 of 8x the tokens
        assert eight[name].flops == pytest.approx(one[name].flops)
    assert "attn_all_reduce" in eight and "ffn_all_reduce" in eight and "attn_all_reduce" not in one
    p = plan(base, H200, LLAMA)
    w1, w8 = memory_use(plan(dataclasses.replace(base, tp=1), H200, LLAMA)), memory_use(p)
    replicated = LLAMA.embedding_params() * 2 + LLAMA.num_layers * LLAMA.norm_params()
    assert w8.weights_bytes == pytest.approx((w1.weights_bytes - replicated) / 8 + replicated, rel=0.01)


def test_all_reduce_moves_the_ring_bytes() -> None:
    p = plan(DECODE, H200, LLAMA)
    g = 8
    tokens = p.tokens_per_die  # the group's tokens: each die holds all of them after the reduce
    assert tokens == pytest.approx(16 * g)
    op = _ops(DECODE)["attn_all_reduce"]
    bw = H200.system.planes.scale_up.bw_gb_s_per_die.value * 1e9
    assert Pricer(H200, None).price(op).roofline_s == pytest.approx(
        2 * (g - 1) / g * tokens * LLAMA.hidden * ACT_BYTES / bw
    )


def test_kv_is_split_by_kv_heads_and_per_chip_figures_hold() -> None:
    est = estimate(H200, LLAMA, DECODE)
    per_seq = LLAMA.kv_bytes(2048 + 256, 2.0) / 8  # 8 KV heads over 8 dies
    assert est.memory.kv_bytes == pytest.approx(16 * 8 * per_seq)  # the group's 128 sequences
    assert est.tokens_per_step_per_chip == 16 and est.memory.max_batch_per_chip > 16
    pre = estimate(H200, LLAMA, PREFILL)
    assert pre.tokens_per_step_per_chip == pytest.approx(4096)
    assert estimate(H200, LLAMA, dataclasses.replace(DECODE, tp=4)).tpot_s > est.tpot_s


@pytest.mark.parametrize(
    ("model", "deployment", "message"),
    [
        ("deepseek-r1", dataclasses.replace(DECODE, tp=2, ep=1), "must sit inside one expert group"),
        ("llama-3.1-405b", dataclasses.replace(DECODE, tp=3), "tensor parallelism 3 must divide the 8 dies"),
        ("llama-3.1-405b", dataclasses.replace(DECODE, num_chips=16, tp=16), None),
    ],
)
def test_tp_errors(model: str, deployment: Deployment, message: str | None) -> None:
    if message is None:
        assert estimate("hgx-h200", model, deployment).tpot_s > 0
        return
    with pytest.raises(InfeasibleDeploymentError, match=message):
        estimate("hgx-h200", model, deployment)
