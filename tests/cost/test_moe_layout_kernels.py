"""The grouped kernels of a MoE follow its expert layout (SGLang: Triton fused_moe for TP experts, DeepGEMM
behind DeepEP), each kernel's own split tables are chosen per kernel, and the chip's serving factor multiplies
library tables only, never a curve measured through the engine's own module."""

import pytest

from cloudmatrix.catalog.corpus import load_rows
from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.kernels import best_share, kernel_curves, serving_share
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.stacks import stack_kernels
from cloudmatrix.cost.ops import Op, OpClass, Stream
from cloudmatrix.cost.pricing import Pricer, moe_gathered, pricer
from cloudmatrix.cost.shape_range import shape_steps
from cloudmatrix.deploy import Deployment, MoeComm, Phase, plan

H200_SERVING = 0.713


def _experts(rows: float, split: int) -> Op:
    return Op(
        name="experts",
        op_class=OpClass.GEMM,
        stream=Stream.MOE,
        flops=1e12,
        precision="fp8",
        kernel="grouped",
        rows=rows,
        weights="fp8",
        split=split,
    )


def _plan(**kw: object) -> object:
    kw.setdefault("tokens_per_chip", 8192)
    kw.update(precision="fp8", activation_precision="fp8")
    d = Deployment(phase=Phase.PREFILL, num_chips=8, stack="sglang", **kw)  # type: ignore[arg-type]
    return plan(d, load_hardware("hgx-h200"), load_model("deepseek-r1"))


@pytest.mark.parametrize(
    ("layout", "gathered"),
    [
        ({"ep": 1, "moe_tp": 8, "attention_tp": 8}, True),  # TP8 experts: the IMX H200 rows
        ({"ep": 1, "moe_tp": 8, "attention_tp": 1}, True),  # TP experts under DP attention
        ({"ep": 8, "moe_tp": 1, "attention_tp": 1}, False),  # DP attention + DeepEP
    ],
)
def test_the_moe_layout_picks_the_stacks_grouped_kernels(layout: dict, gathered: bool) -> None:
    p = _plan(**layout)
    assert (p.moe_comm is not MoeComm.DISPATCH) is gathered and moe_gathered(p) is gathered
    expected = ("triton-fused-moe",) if gathered else ("deepgemm",)
    assert stack_kernels("sglang", "hopper", "grouped", gathered) == expected
    assert pricer(p).moe_gathered is gathered


def test_a_stack_without_a_gathered_list_keeps_its_grouped_one() -> None:
    for stack in ("vllm", "trtllm", None):
        for family in ("hopper", "blackwell"):
            assert stack_kernels(stack, family, "grouped", True) == stack_kernels(stack, family, "grouped")
    assert stack_kernels("sglang", "hopper", "dense", True) == ("deepgemm",)  # only the grouped op changes


def test_each_kernel_keeps_its_own_nearest_split() -> None:
    """Triton's TP8 table does not push DeepGEMM (measured unsplit) out of the candidates at TP8."""
    found = {
        (c.kernel, c.split)
        for c in kernel_curves("nvidia-h200", "fp8", "grouped", ("deepgemm", "triton-fused-moe"), None, 8)
    }
    assert found == {("deepgemm", 1), ("triton-fused-moe", 8)}
    for split in (1, 2, 4, 8):
        (c,) = kernel_curves("nvidia-h200", "fp8", "grouped", ("triton-fused-moe",), None, split)
        assert c.split == split and c.engine_measured


def test_unnamed_kernels_take_the_library_tables() -> None:
    """With no engine named, an engine's own module does not price the chip."""
    for split in (1, 8):
        assert {c.kernel for c in kernel_curves("nvidia-h200", "fp8", "grouped", (), None, split)} == {
            "deepgemm",
            "cutlass",
        }


@pytest.mark.parametrize("m", [8.0, 64.0, 256.0, 640.0])
def test_the_serving_factor_multiplies_library_tables_only(m: float) -> None:
    (triton,) = kernel_curves("nvidia-h200", "fp8", "grouped", ("triton-fused-moe",), None, 8)
    (deepgemm,) = kernel_curves("nvidia-h200", "fp8", "grouped", ("deepgemm",))
    assert serving_share(triton, "nvidia-h200", m, 0.0, H200_SERVING) == triton.compute_efficiency(m)
    assert serving_share(deepgemm, "nvidia-h200", m, 0.0, H200_SERVING) == pytest.approx(
        H200_SERVING * deepgemm.compute_efficiency(m)
    )
    hw = load_hardware("hgx-h200")
    assert hw.chip.efficiency.gemm_serving.value == H200_SERVING
    gathered = Pricer(hw, "sglang", (), moe_gathered=True)
    assert gathered.compute_efficiency(_experts(m, 8)) == pytest.approx(triton.compute_efficiency(m))
    assert best_share("nvidia-h200", "fp8", "grouped", ("deepgemm",), m, serving=H200_SERVING) == pytest.approx(
        Pricer(hw, "sglang").compute_efficiency(_experts(m, 1))
    )


def test_tp_experts_on_triton_run_slower_than_deepgemm_at_prefill_shapes() -> None:
    """The mechanism behind the H200 8K TTFT: at 256-640 rows per expert SGLang's Triton fused_moe at TP8
    reaches 0.20-0.23 of the FP8 peak, below DeepGEMM's curve even under the serving factor."""
    hw = load_hardware("hgx-h200")
    tp, ep = Pricer(hw, "sglang", (), moe_gathered=True), Pricer(hw, "sglang")
    for m in (256.0, 512.0, 640.0):
        assert 0.19 < tp.compute_efficiency(_experts(m, 8)) < 0.24
        assert tp.compute_efficiency(_experts(m, 8)) < ep.compute_efficiency(_experts(m, 1))


def test_a_prompt_beyond_the_triton_tables_is_flagged() -> None:
    """A 32K-token chunk at TP8 runs 1,024 rows per expert, past the table's 640: flagged, priced held."""
    p = _plan(ep=1, moe_tp=8, attention_tp=8, tokens_per_chip=32768)
    steps = [s for s in shape_steps(p) if s.op == "experts"]  # type: ignore[arg-type]
    assert steps and "triton-fused-moe grouped fp8" in steps[0].reason and steps[0].hi == 640


def test_the_h200_sglang_deepseek_rows_name_the_triton_moe() -> None:
    """What the IMX H200 runs ran (SGLang TP8, no all-to-all backend): the row names the kernel, so the host
    time fit and validation price the same device."""
    rows = [r for r in load_rows("inferencemax-more") + load_rows("inferencemax-public") if r.stack == "sglang"]
    h200 = [r for r in rows if r.system == "hgx-h200" and r.model == "deepseek-r1"]
    assert h200 and all(r.kernels == ["triton-fused-moe"] for r in h200)
    assert all(r.kernels == [] for r in rows if r.system != "hgx-h200")
