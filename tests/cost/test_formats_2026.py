"""Weight formats of 2026: int4 stored and computed in int8 (Ascend's W4A8) or bf16 (AWQ/GPTQ W4A16), MXFP8 on
Blackwell and the Ascend 950, HiF8 on the Ascend 950; refusals name what the chip computes."""

import math

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.layers import layer_ops
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.cost.ops import OpClass
from cloudmatrix.deploy import Deployment, Phase, Plan, plan
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.estimate import estimate


def _decode(**changes: object) -> Deployment:
    base: dict = dict(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=16, kv_len=4096, mtp=0)
    return Deployment(**{**base, **changes})


def test_w4a8_on_the_910c_stores_half_the_expert_bytes_and_computes_in_int8() -> None:
    w8, w4 = _decode(precision="int8"), _decode(precision="int4", activation_precision="int8")
    e8, e4 = estimate("cloudmatrix384", "deepseek-r1", w8), estimate("cloudmatrix384", "deepseek-r1", w4)
    assert math.isfinite(e4.step.step_s) and e4.step.step_s < e8.step.step_s
    hw = load_hardware("cloudmatrix384")
    r1 = load_model("deepseek-r1")
    p8, p4 = plan(w8, hw, r1), plan(w4, hw, r1)
    assert m4_weights(p4) < 0.6 * m4_weights(p8)  # BF16 embedding and head stay as they are
    assert {op.precision for op in layer_ops(p4, moe=True) if op.op_class is OpClass.GEMM} <= {"int8", "bf16"}
    assert any(op.weights == "int4" for op in layer_ops(p4, moe=True))


def m4_weights(p: Plan) -> float:
    return memory_use(p).weights_bytes


@pytest.mark.parametrize(
    ("system", "deployment", "named"),
    [
        ("cloudmatrix384", {"precision": "int4"}, r"computes bf16, int8.*--activation-precision int8"),
        ("cloudmatrix384", {"precision": "hif8"}, r"computes bf16, int8.*--activation-precision bf16"),
        ("cloudmatrix384", {"precision": "mxfp8"}, r"compute format mxfp8: the Huawei Ascend 910C computes"),
        ("hgx-h100", {"precision": "mxfp8"}, r"computes bf16, fp8, int8.*--activation-precision fp8"),
        (
            "hgx-b200",
            {"precision": "hif8"},
            r"compute format hif8: the NVIDIA B200 \(HGX\) computes bf16, fp8, mxfp8, int8, fp4",
        ),
        ("cloudmatrix384", {"precision": "int4", "activation_precision": "int4"}, "activation precision 'int4'"),
        (
            "cloudmatrix384",
            {"precision": "int4", "activation_precision": "int8", "kv_precision": "int4"},
            "kv precision 'int4' is not one of",
        ),  # fmt: skip
    ],
)
def test_a_format_the_chip_lacks_is_refused_naming_what_it_computes(system: str, deployment: dict, named: str) -> None:
    with pytest.raises(InfeasibleDeploymentError, match=named):
        estimate(system, "deepseek-r1" if system == "cloudmatrix384" else "qwen3-235b-a22b", _decode(**deployment))


def test_w4a16_runs_on_gpus_and_mxfp8_and_hif8_where_the_chip_has_them() -> None:
    gpu = dict(num_chips=8, ep=8, batch_per_chip=32)
    w4a16 = estimate("hgx-h200", "qwen3-235b-a22b", _decode(**gpu, precision="int4", activation_precision="bf16"))
    bf16 = estimate("hgx-h200", "qwen3-235b-a22b", _decode(**gpu, precision="bf16"))
    assert w4a16.step.step_s < bf16.step.step_s  # a quarter of the weight bytes, the same BF16 math
    mx = estimate("hgx-b200", "qwen3-235b-a22b", _decode(**gpu, precision="mxfp8"))
    assert math.isfinite(mx.step.step_s)
    for fmt in ("mxfp8", "hif8"):
        e = estimate("atlas950-superpod", "deepseek-r1", _decode(num_chips=64, ep=64, precision=fmt))
        assert math.isfinite(e.step.step_s)
    assert load_hardware("atlas950-superpod").chip.die.peak_flops("hif8") == pytest.approx(
        load_hardware("atlas950-superpod").chip.die.peak_flops("fp8")
    )
