"""Weights, GEMM activations and KV each have a precision. GEMMs compute in their activations' format, which
the chip must have units for; weights may be stored narrower (W4A16)."""

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.layers import layer_ops
from cloudmatrix.deploy import BYTES_PER_ELEMENT, Deployment, Phase, plan
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.estimate import estimate

OSS = load_model("gpt-oss-120b")


def _decode(**kw) -> Deployment:
    return Deployment(phase=Phase.DECODE, num_chips=1, batch_per_chip=16, input_len=1024, ep=1, **kw)


def test_fp4_compute_is_refused_where_the_chip_has_no_fp4_units() -> None:
    with pytest.raises(InfeasibleDeploymentError, match=r"compute format fp4: the .* computes bf16, int8"):
        estimate(
            "cloudmatrix384",
            "deepseek-r1",
            Deployment(phase=Phase.DECODE, num_chips=16, batch_per_chip=8, precision="fp4"),
        )
    with pytest.raises(InfeasibleDeploymentError, match="--activation-precision"):
        estimate("hgx-h100", OSS, _decode(precision="fp4"))


def test_w4a16_runs_on_hopper_at_the_bf16_rate_with_fp4_weights() -> None:
    hw = load_hardware("hgx-h100")
    p = plan(_decode(precision="fp4", activation_precision="bf16"), hw, OSS)
    experts = {op.name: op for op in layer_ops(p, moe=True)}["experts"]
    assert experts.precision == "bf16" and p.weight_bytes == BYTES_PER_ELEMENT["fp4"]
    w8 = plan(_decode(precision="fp8", activation_precision="bf16"), hw, OSS)
    w8_experts = {op.name: op for op in layer_ops(w8, moe=True)}["experts"]
    weights_fp4 = experts.hbm_bytes - (w8_experts.hbm_bytes - experts.hbm_bytes)  # fp8 reads twice the weights
    assert weights_fp4 > 0 and experts.flops == w8_experts.flops
    assert estimate(hw, OSS, _decode(precision="fp4", activation_precision="bf16")).tpot_s > 0


def test_activations_narrower_than_weights_are_refused() -> None:
    with pytest.raises(InfeasibleDeploymentError, match="activation precision fp8 is narrower than the bf16"):
        plan(_decode(precision="bf16", activation_precision="fp8"), load_hardware("hgx-b200"), OSS)


def test_unknown_formats_name_the_valid_ones() -> None:
    with pytest.raises(InfeasibleDeploymentError, match="activation precision 'fp6' is not one of"):
        plan(_decode(precision="fp8", activation_precision="fp6"), load_hardware("hgx-b200"), OSS)
