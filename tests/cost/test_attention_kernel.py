"""The fused attention kernel a stack names (stacks.yaml ``kernels: {attention: ...}``): its measured curve is
the published single-head benchmark net of the call's fixed cost and of the cores its last wave leaves
idle; it prices the dense prefill attention of the stacks that name it, by the keys each query row runs
over, and no other stack's (CloudMatrix-Infer's CANN kernels keep the chip's flat value)."""

import json
import math

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.kernels import check_kernels, kernel_curves, kernels_measured_on, microbench
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.stacks import load_stack, stack_ids, stack_kernels
from cloudmatrix.cli.app import app
from cloudmatrix.cost.layers import layer_ops
from cloudmatrix.cost.ops import Op, OpClass, Stream, new_op
from cloudmatrix.cost.pricing import Pricer, pricer
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.studies.kernel_fit import _shares

TABLE = "torch-npu-fia-a3-fp16-attention"
PEAK = 376e12  # the 910C die's BF16 peak (catalog)


def _attention(kv_len: float, flops: float = 1e12) -> Op:
    return new_op("flash_attention", OpClass.ATTENTION, Stream.ATTENTION, flops, 1e6, kernel="attention", rows=kv_len)


def test_the_reduction_takes_each_row_net_of_the_call_and_of_idle_cores() -> None:
    """4,096: one head is 32 query tiles of 128 rows, two waves on 24 cube cores of which the second keeps 8
    busy (2/3 of the cores over the call); the fastest row (1,024: 54 us) is the call's fixed cost; the
    2,048 row (73 us) is within twice it and left out."""
    table = microbench()[TABLE]
    shares = dict(_shares(table))
    assert sorted(shares) == [4096.0, 8192.0, 16384.0, 32768.0, 65536.0, 131072.0]
    flops = 4.0 * 4096 * 4096 * 128
    assert shares[4096.0] == pytest.approx(flops / ((139e-6 - 54e-6) * PEAK * (32 / 48)))
    assert shares[4096.0] == pytest.approx(0.4032, abs=5e-5)
    # 131,072: 1,024 tiles in 43 waves, 1,024 of 1,032 core-slots busy
    flops = 4.0 * 131072**2 * 128
    assert shares[131072.0] == pytest.approx(flops / ((48135e-6 - 54e-6) * PEAK * (1024 / 1032)))


def test_the_kernel_runs_below_the_cann_mla_fraction_at_every_measured_length() -> None:
    """torch_npu's fused attention reaches 40-50 % of the die's peak where the twin's flat value (P3 Table 7,
    CANN's MLA) is 65.4 %: slower, but nowhere near the 4 % the SGLang-on-A3 prefill gap would need."""
    (curve,) = kernel_curves("ascend-910c", "bf16", "attention", ("npu-fused-infer-attention",))
    flat = load_hardware("atlas-800t-a3").chip.efficiency.attention_compute.value
    assert all(0.40 <= share <= 0.50 < flat for _, share in curve.points)


@pytest.mark.parametrize(
    ("kv_len", "share"),
    [
        (2048.0, 0.4032),  # below the first point: held
        (4096.0, 0.4032),
        (math.sqrt(4096.0 * 8192.0), math.sqrt(0.4032 * 0.4338)),  # log-log between points
        (8192.0, 0.4338),
        (1e6, 0.4904),  # beyond the last: held
    ],
)
def test_sglang_ascend_prices_prefill_attention_by_its_kernel(kv_len: float, share: float) -> None:
    hw = load_hardware("atlas-800t-a3")
    p = Pricer(hw, "sglang-ascend")
    op = _attention(kv_len)
    assert p.compute_efficiency(op) == pytest.approx(share)
    # the 910C's attention loads do not overlap its matmuls (attention_overlap 0): the two terms add
    memory = op.hbm_bytes / (hw.chip.efficiency.attention_memory.value * hw.chip.hbm_bw_bytes_per_s_per_die)
    assert p.price(op).time_s == pytest.approx(op.flops / (share * PEAK) + memory + p.launch_us * 1e-6)


def test_no_stack_without_a_named_attention_kernel_takes_a_curve() -> None:
    """Every stack: the curve prices a fused attention op only where the stack (or the deployment) names a
    kernel measured on the chip for it (a family entry `like` another family's inherits its names, such as
    FlashAttention 3 from vLLM's Hopper entry, which Ascend has no curve of); CloudMatrix-Infer, MindIE and
    vLLM-Ascend keep the flat CANN value, and so does an attention op that carries no kernel (decode
    attention, sparse attention)."""
    hw = load_hardware("atlas-800t-a3")
    flat = hw.chip.efficiency.attention_compute.value
    measured = set(kernels_measured_on((hw.chip.id, hw.chip.curves_chip)))
    named_any = False
    for stack in (None, *stack_ids()):
        p = Pricer(hw, stack)
        named = stack is not None and bool(measured & set(stack_kernels(stack, hw.chip.family, "attention")))
        named_any |= named
        assert (p.compute_efficiency(_attention(4096.0)) != flat) is named, stack
        plain = new_op("attention_core", OpClass.ATTENTION, Stream.ATTENTION, 1e12, 1e6)
        assert p.compute_efficiency(plain) == flat, stack
    assert named_any
    for stack in ("cloudmatrix-infer", "mindie", "vllm-ascend"):
        assert Pricer(hw, stack).compute_efficiency(_attention(4096.0)) == flat
    # a deployment that names the kernel runs it on any stack
    kernels = check_kernels(["npu-fused-infer-attention"])
    assert Pricer(hw, "cloudmatrix-infer", kernels).compute_efficiency(_attention(4096.0)) == pytest.approx(0.4032)


def test_a_like_family_adds_its_own_kernels_to_the_named_costs() -> None:
    """sglang-ascend's Ascend family keeps SGLang's Hopper host times and GEMM kernels, and names its own
    attention kernel over the Hopper entry's (FlashAttention 3)."""
    own, named = load_stack("sglang-ascend").costs("ascend"), load_stack("sglang").costs("hopper")
    assert own.kernels["attention"] == ["npu-fused-infer-attention"]
    assert own.step_overhead_us == named.step_overhead_us and own.request_overhead_ms == named.request_overhead_ms
    assert own.kernels["dense"] == named.kernels["dense"] and named.kernels["attention"] == ["flash-attention-3"]
    assert own.kernels_source.startswith("SGLANG-SRC")


@pytest.mark.parametrize("model", ["deepseek-r1", "qwen3-32b"])
def test_the_dense_prefill_attention_op_carries_its_key_length(model: str) -> None:
    """MLA and GQA prefill: the fused attention runs over the keys up to the prompt's end (the kernel's S1);
    on sglang-ascend it is priced by the curve there, on CloudMatrix-Infer at the flat value."""
    for stack in ("sglang-ascend", "cloudmatrix-infer"):
        d = Deployment(phase=Phase.PREFILL, num_chips=16, batch_per_chip=1, input_len=6000, stack=stack)
        p = plan(d, load_hardware("atlas-800t-a3"), load_model(model))
        (fa,) = [op for op in layer_ops(p, moe=False) if op.name == "flash_attention"]
        assert (fa.kernel, fa.rows) == ("attention", 6000.0)
        share = pricer(p).compute_efficiency(fa)
        if stack == "sglang-ascend":
            (curve,) = kernel_curves("ascend-910c", "bf16", "attention", ("npu-fused-infer-attention",))
            assert share == pytest.approx(curve.compute_efficiency(6000.0)) and 0.4032 < share < 0.4338
        else:
            assert share == p.hardware.chip.efficiency.attention_compute.value


def test_sparse_prefill_attention_keeps_the_flat_value() -> None:
    """DeepSeek-V3.2 at 64K runs its MQA-form sparse attention over the top-k, not the fused dense kernel."""
    d = Deployment(phase=Phase.PREFILL, num_chips=16, batch_per_chip=1, input_len=65536, stack="sglang-ascend")
    p = plan(d, load_hardware("atlas-800t-a3"), load_model("deepseek-v3.2"))
    (sa,) = [op for op in layer_ops(p, moe=False) if op.name == "sparse_attention"]
    assert (sa.kernel, sa.rows) == ("", 0.0)
    assert pricer(p).compute_efficiency(sa) == p.hardware.chip.efficiency.attention_compute.value


def test_estimate_runs_the_attention_kernel_a_deployment_names() -> None:
    """End to end: a CloudMatrix-Infer prefill that names torch_npu's kernel is slower than its own (CANN's
    flat value); a name without a curve exits 2."""
    runner = CliRunner()
    base = ["estimate", "--system", "atlas-800t-a3", "--model", "deepseek-r1", "--phase", "prefill", "--json",
            "--chips", "16", "--ep", "32", "--precision", "int8",
            "--tokens-per-chip", "4096", "--input-len", "4096"]  # fmt: skip
    runs = [
        runner.invoke(app, base + extra)
        for extra in (
            ["--stack", "cloudmatrix-infer"],
            ["--stack", "cloudmatrix-infer", "--kernels", "npu-fused-infer-attention"],
        )
    ]
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    own, named = (json.loads(r.stdout)["step_ms"] for r in runs)
    assert named > own
    bad = runner.invoke(app, base + ["--kernels", "npu-fused-attention"])
    assert bad.exit_code == 2 and "kernels (--kernels): got 'npu-fused-attention'" in bad.output
