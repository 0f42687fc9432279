"""Qwen3-Next's hybrid linear attention priced: the Gated DeltaNet state is read and written per sequence and
step whatever the context, only the full-attention layers' cache grows, and the state counts in memory."""

import math

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.model_spec import STATE_BYTES
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.linear_attention import hybrid_attention_ops
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.estimate import estimate

NEXT = load_model("qwen3-next-80b-a3b")
H200 = load_hardware("hgx-h200")


def _decode(context: int, batch: float = 16) -> Deployment:
    return Deployment(phase=Phase.DECODE, num_chips=8, ep=8, batch_per_chip=batch, input_len=context, output_len=1,
                      kv_len=context, precision="fp8")  # fmt: skip


def _ops(d: Deployment) -> dict:
    return {op.name: op for op in hybrid_attention_ops(plan(d, H200, NEXT), 1.0)}


def test_the_delta_rule_reads_and_writes_each_sequences_state_once_per_step_whatever_the_context() -> None:
    lin = NEXT.linear
    assert lin is not None
    short, long = _ops(_decode(4096)), _ops(_decode(65536))
    assert short["gated_deltanet"].hbm_bytes == long["gated_deltanet"].hbm_bytes
    state = 16 * 2 * lin.state_elems() * STATE_BYTES  # 16 sequences, read + write
    io = 16 * (8192 + 2 * 32 * 128) * 2  # convolution channels in, values and gate of each value head, BF16
    assert short["gated_deltanet"].hbm_bytes == pytest.approx((state + io) * 36 / 48)  # the linear layers' share
    assert short["gated_deltanet"].flops == pytest.approx(16 * 36 / 48 * (lin.recurrence_flops() + 2 * 8192 * 4))
    assert long["attention_core"].hbm_bytes == pytest.approx(16 * short["attention_core"].hbm_bytes, rel=0.01)


def test_memory_holds_the_state_per_sequence_beside_the_full_layers_cache() -> None:
    p = plan(_decode(4096, batch=64), H200, NEXT)
    per_seq = NEXT.kv_bytes(4097, p.kv_bytes)
    assert memory_use(p).kv_bytes == pytest.approx(64 * per_seq / p.kv_shards)
    assert NEXT.linear_state_bytes() == pytest.approx(36 * (32 * 128 * 128 + 8192 * 3) * 2)


@pytest.mark.parametrize("phase", [Phase.DECODE, Phase.PREFILL, Phase.AGGREGATED])
def test_every_phase_prices_finite(phase: Phase) -> None:
    if phase == Phase.PREFILL:
        d = Deployment(phase=phase, num_chips=8, ep=8, tokens_per_chip=16384, input_len=8192, precision="fp8")
    else:
        d = Deployment(phase=phase, num_chips=8, ep=8, batch_per_chip=32, input_len=8192, output_len=512,
                       precision="fp8")  # fmt: skip
    step = estimate(H200, NEXT, d).step.step_s
    assert math.isfinite(step) and step > 0
