"""GEMM kernel curves: the catalog holds the fit of its published microbenchmarks, the curve has the shape
it claims, and the cost model prices a measured MoE layer near what was measured."""

import math

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.kernels import best_share, curves, kernel_curves, microbench
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.stacks import stack_kernels
from cloudmatrix.cost.moe import moe_ffn
from cloudmatrix.cost.ops import OpClass, Stream, new_op
from cloudmatrix.cost.pricing import pricer
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.studies.kernel_fit import _shares, fit_kernel_curves


def test_catalog_holds_the_reduction() -> None:
    for c, (name, row) in zip(curves(), fit_kernel_curves().items(), strict=True):
        assert [tuple(p) for p in c.points] == row["points"], name
        assert ([tuple(p) for p in c.levels], [tuple(p) for p in c.growth]) == (row["levels"], row["growth"]), name


def test_every_curve_names_tables_that_exist_and_match_it() -> None:
    bench = microbench()
    for c in curves():
        for t in c.tables:
            assert bench[t].kernel == c.kernel and bench[t].op == c.op and bench[t].format == c.format
            assert set(bench[t].chips) == set(c.chips)
            assert bench[t].measured_on == c.measured_on  # a curve states where its tables were measured
        assert c.measured_on is None or c.measured_on in c.chips
        assert c.source.startswith("REDUCED:") and all(0 < share <= 1 for _, share in c.points)
        assert [m for m, _ in c.points] == sorted(m for m, _ in c.points)


def test_curve_interpolates_in_log_log_and_holds_beyond_its_points() -> None:
    """A curve without measurements past its points (the min-latency kernel: decode tables only) holds."""
    (c,) = kernel_curves("nvidia-b200", "fp4", "grouped", ("min-latency",))
    assert not c.levels
    (m0, e0), (m1, e1) = c.points[0], c.points[1]
    assert c.compute_efficiency(m0) == e0 and c.compute_efficiency(m1) == pytest.approx(e1)
    assert c.compute_efficiency(math.sqrt(m0 * m1)) == pytest.approx(math.sqrt(e0 * e1))
    assert c.compute_efficiency(m0 / 10) == e0 and c.compute_efficiency(1e9) == c.points[-1][1]


def test_kernel_choice_and_fallbacks() -> None:
    assert [c.kernel for c in kernel_curves("nvidia-h200", "fp8", "grouped", ("deepgemm",))] == ["deepgemm"]
    assert [c.kernel for c in kernel_curves("nvidia-h200", "fp8", "grouped", ("cutlass",))] == ["cutlass"]
    assert {c.kernel for c in kernel_curves("nvidia-h200", "fp8", "grouped")} == {"deepgemm", "cutlass"}
    assert kernel_curves("ascend-910c", "int8", "grouped") == ()  # no curve: the flat factors apply
    assert best_share("ascend-910c", "int8", "grouped", (), 64.0) == 0.0


def test_an_engine_picks_the_faster_kernel_per_shape() -> None:
    """TensorRT-LLM's min-latency MoE kernels win at small batch, CUTLASS at large."""
    kernels = ("cutlass", "min-latency")
    small, large = 2.0, 512.0
    by = {c.kernel: c for c in kernel_curves("nvidia-b200", "fp4", "grouped", kernels)}
    assert by["min-latency"].compute_efficiency(small) > by["cutlass"].compute_efficiency(small)
    assert by["cutlass"].compute_efficiency(large) > by["min-latency"].compute_efficiency(large)
    for m in (small, large):
        assert best_share("nvidia-b200", "fp4", "grouped", kernels, m) == max(
            c.compute_efficiency(m) for c in by.values()
        )


@pytest.mark.parametrize("tokens", [512, 4096, 16384])
def test_a_measured_moe_layer_is_priced_near_its_measurement(tokens: int) -> None:
    """AIConfigurator's TensorRT-LLM NVFP4 MoE layers of DeepSeek-V3's shape on one B200 (balanced
    routing), measured holding 32 experts (EP8) and 8 (EP32), for the CUTLASS and min-latency kernels.
    TensorRT-LLM runs the faster: per local expert, the twin's experts + SwiGLU ops for a B200 at EP8,
    without dispatch, are within 25 % of the faster kernel's geometric mean over the two tables, once the
    local shared expert the twin adds (1/8 more rows) is counted."""
    bench = microbench()
    per_kernel = []
    for kernel in ("fp4-moe", "fp4-moe-min-latency"):
        per_expert = []
        for ep, local in ((8, 32), (32, 8)):
            (row,) = [r for r in bench[f"aic-b200-{kernel}-ep{ep}"].rows if r.tokens == tokens]
            per_expert.append(row.latency_us / local)
        per_kernel.append(math.sqrt(per_expert[0] * per_expert[1]))
    expected_us = min(per_kernel) * 32 * (1 + 1 / 8)
    # each of the 8 GPUs sends its tokens: the layer sees ``tokens`` per GPU
    assert _ep8_experts_us("hgx-b200", "trtllm", tokens / 8) == pytest.approx(expected_us, rel=0.25)


def test_amd_mxfp4_curves_are_aiters_and_only_where_fp4_units_are() -> None:
    """MI355X computes MXFP4 and has AITER's measured GEMM and MoE curves; MI300X and MI325X have no FP4
    units, so no FP4 curve (their MXFP4 weights run at the FP8 rate with the flat factors)."""
    for op in ("dense", "grouped"):
        (c,) = kernel_curves("amd-mi355x", "fp4", op)
        assert c.kernel == "aiter" and all(t.startswith("aiter-mi355x-fp4") for t in c.tables)
    for chip in ("amd-mi300x", "amd-mi325x"):
        assert all(kernel_curves(chip, "fp4", op) == () for op in ("dense", "grouped"))
    # saturated: the MoE layer reaches about 28 % of the 10.1 PF MXFP4 peak, a dense GEMM about 46 %
    assert best_share("amd-mi355x", "fp4", "grouped", (), 8192.0) == pytest.approx(0.28, abs=0.01)
    assert best_share("amd-mi355x", "fp4", "dense", (), 16384.0) == pytest.approx(0.46, abs=0.01)


@pytest.mark.parametrize("tokens", [512, 2048, 16384])
def test_a_measured_mi355x_moe_layer_is_priced_near_its_measurement(tokens: int) -> None:
    """AITER's MXFP4 fused MoE of DeepSeek-V3's experts on one MI355X holding 32 of them (EP8), each token
    routed to 8 local experts (tokens / 4 rows per expert): the twin's experts + SwiGLU ops at EP8 with
    ``tokens`` per GPU (the same rows per expert under balanced routing) are within 25 % of it, once the
    local shared expert the twin adds (1/8 more FLOPs) is counted."""
    (row,) = [r for r in microbench()["aiter-mi355x-fp4-moe-ep8"].rows if r.tokens == tokens]
    assert row.latency_us is not None
    expected_us = row.latency_us * (1 + 1 / 8)
    assert _ep8_experts_us("mi355x", "atom", tokens) == pytest.approx(expected_us, rel=0.25)


def _ep8_experts_us(system: str, stack: str, batch_per_chip: float, precision: str = "fp4") -> float:
    """The twin's experts + SwiGLU ops (µs) of a DeepSeek-R1 decode layer at EP8 on 8 chips, balanced."""
    d = Deployment(
        phase=Phase.DECODE,
        num_chips=8,
        ep=8,
        batch_per_chip=batch_per_chip,
        input_len=1024,
        precision=precision,
        eplb="perfect",
        redundant_experts=0,
        stack=stack,
    )
    p = plan(d, load_hardware(system), load_model("deepseek-r1"))
    ops = {op.name: op for op in moe_ffn(p, 1.0)}
    return sum(pricer(p).price(ops[n]).time_s for n in ("experts", "swiglu")) * 1e6


def test_w4a16_curves_leave_the_weight_read_plateau_to_the_memory_term() -> None:
    """Every W4A16 table's rows whose layer time is within 30 % of its fastest all-expert layer (time flat in
    M: the weight read) are out of its curve, so the curve starts past the plateau; FP8/FP4 tables keep them."""
    bench = microbench()
    for c in curves():
        for t in (bench[t] for t in c.tables):
            s = t.moe_shape
            if s is None:
                continue
            layers = {r.tokens * s.top_k / s.experts: r.latency_us for r in t.rows if r.tokens * s.top_k >= s.experts}
            floor = min(layers.values())
            first = min(m for m, us in layers.items() if us >= 1.3 * floor)
            shares = dict(_shares(t))
            assert min(shares) == (first if c.weights else min(layers)), t.id


def test_a_deployment_that_names_marlin_runs_w4a16_experts_on_its_slower_prefill_curve() -> None:
    """vLLM's Marlin MXFP4 MoE (AIConfigurator's H100 tables, every expert TP size) reaches under half the
    BF16 share of the triton_kernels MoE at prefill rows per expert; named, it is the curve priced."""
    for split in (1, 2, 4, 8):
        (marlin,) = kernel_curves("nvidia-h200", "bf16", "grouped", ("marlin-mxfp4",), "fp4", split)
        (triton,) = kernel_curves("nvidia-h200", "bf16", "grouped", ("triton-mxfp4",), "fp4", split)
        assert marlin.kernel == "marlin-mxfp4" and marlin.split == split
        for m in (128.0, 256.0):
            assert marlin.compute_efficiency(m) < 0.55 * triton.compute_efficiency(m), (split, m)


def test_cdna3_fp8_curves_are_aiters_tuned_tables_with_their_source() -> None:
    """MI300X (and MI325X, the same gfx942 die) price block-FP8 GEMMs on AITER's tuned DeepSeek-V3 tables
    (cu_num 304), read from catalog data with the tables' source; they sit well below the flat
    hipBLASLt fraction the chips carried (0.487 of the FP8 peak) at prefill sizes."""
    bench = microbench()
    for op, table in (("dense", "aiter-mi300x-fp8-dense"), ("grouped", "aiter-mi300x-fp8-moe-ep8")):
        for chip in ("amd-mi300x", "amd-mi325x"):
            (c,) = kernel_curves(chip, "fp8", op)
            assert c.kernel == "aiter" and c.tables == [table]
        assert "ROCm/aiter" in bench[table].source and "tuned" in bench[table].source
    assert best_share("amd-mi300x", "fp8", "dense", (), 8192.0) == pytest.approx(0.29, abs=0.01)
    assert best_share("amd-mi300x", "fp8", "grouped", (), 2234.182) == pytest.approx(0.36, abs=0.01)


def test_the_aiter_fp8_tables_state_they_were_measured_on_an_mi300x() -> None:
    """The loader reads ``measured_on`` from the tables and curves that state it; every other curve has none."""
    bench = microbench()
    for table in ("aiter-mi300x-fp8-dense", "aiter-mi300x-fp8-moe-ep8"):
        assert bench[table].measured_on == "amd-mi300x" and "assumed" in bench[table].note
    stated = {(c.kernel, c.op, c.format): c.measured_on for c in curves() if c.measured_on}
    assert stated == {
        ("aiter", "dense", "fp8"): "amd-mi300x",
        ("aiter", "grouped", "fp8"): "amd-mi300x",
        ("triton-fused-moe", "grouped", "fp8"): "nvidia-h200",
    }


@pytest.mark.parametrize("op", ["dense", "grouped"])
@pytest.mark.parametrize("m", [64.0, 512.0, 4096.0, 20000.0])
def test_a_curve_measured_on_one_chip_prices_another_at_its_sustained_clock(op: str, m: float) -> None:
    """On the MI325X an MI300X-measured share runs at the ratio of the chips' sustained GEMM ceilings
    (0.581 / 0.487: the clocks each holds under GEMM load), capped at 0.581; the MI300X keeps the curve."""
    (c,) = kernel_curves("amd-mi300x", "fp8", op)
    measured = c.compute_efficiency(m)
    assert best_share("amd-mi300x", "fp8", op, (), m) == measured
    assert best_share("amd-mi325x", "fp8", op, (), m) == pytest.approx(min(measured * 0.581 / 0.487, 0.581), rel=1e-12)


def test_a_scaled_share_is_capped_at_the_target_chips_own_ceiling() -> None:
    """A share that the clock ratio would lift past the target chip's sustained ceiling stops at it; a chip
    with a lower ceiling than the measured one is slowed by the same ratio."""
    (c,) = kernel_curves("amd-mi300x", "fp8", "dense")
    for share in (0.45, 0.50, 0.60):
        flat = c.model_copy(update={"points": [(1.0, share)], "levels": [], "growth": []})
        assert flat.share_on("amd-mi300x", 1.0) == share
        assert flat.share_on("amd-mi325x", 1.0) == pytest.approx(min(share * 0.581 / 0.487, 0.581), rel=1e-12)
        on_mi325x = flat.model_copy(update={"measured_on": "amd-mi325x"})
        assert on_mi325x.share_on("amd-mi300x", 1.0) == pytest.approx(min(share * 0.487 / 0.581, 0.487), rel=1e-12)
    capped = c.model_copy(update={"points": [(1.0, 0.50)], "levels": [], "growth": []})
    assert 0.50 * 0.581 / 0.487 > 0.581 and capped.share_on("amd-mi325x", 1.0) == 0.581


def test_a_curve_without_measured_on_prices_every_chip_it_lists_unchanged() -> None:
    """Hopper's and Blackwell's shared curves state no chip of measurement: each chip they list reads the
    same share (no clock ratio applied)."""
    for c in curves():
        if c.measured_on is None:
            for chip in c.chips:
                for m, _ in c.points:
                    assert c.share_on(chip, m) == c.compute_efficiency(m)
    multi = [c for c in curves() if c.measured_on is None and len(c.chips) > 1]
    assert {"nvidia-h100", "nvidia-h200"} <= {chip for c in multi for chip in c.chips}


def test_an_mi325x_prefill_gemm_is_priced_at_the_mi300x_share_times_the_clock_ratio() -> None:
    """A compute-bound FP8 GEMM of 4,096 rows on an MI325X under SGLang: the AITER curve's MI300X share
    there (0.253) times 0.581 / 0.487 of the 2,614.9 TFLOPS peak, plus the launches."""
    hw = load_hardware("mi325x")
    p = pricer(plan(Deployment(phase=Phase.PREFILL, num_chips=8, stack="sglang"), hw, load_model("deepseek-r1")))
    flops, nbytes = 2.0 * 4096 * 7168 * 2112, 7168 * 2112 + 4096 * (7168 + 2112) * 2.0
    price = p.price(new_op("probe", OpClass.GEMM, Stream.ATTENTION, flops, nbytes, "fp8", "dense", 4096.0, "fp8"))
    compute_s = flops / (0.253 * 0.581 / 0.487 * 2614.9e12)
    assert compute_s > nbytes / (0.80 * 6000e9)  # compute binds
    assert price.time_s == pytest.approx(compute_s + p.launch_us * 1e-6, rel=1e-9)


def test_a_prefill_gemm_at_a_curve_point_is_priced_in_closed_form() -> None:
    """A compute-bound FP8 GEMM of 4,096 rows on an MI300X under SGLang: its time is its FLOPs at the
    curve's share there (0.253 of 2,614.9 TFLOPS, times the chip's serving factor 1.0) plus the launches,
    and its roofline (FLOPs at peak) is below it."""
    hw = load_hardware("mi300x")
    p = pricer(plan(Deployment(phase=Phase.PREFILL, num_chips=8, stack="sglang"), hw, load_model("deepseek-r1")))
    flops, nbytes = 2.0 * 4096 * 7168 * 2112, 7168 * 2112 + 4096 * (7168 + 2112) * 2.0
    price = p.price(new_op("probe", OpClass.GEMM, Stream.ATTENTION, flops, nbytes, "fp8", "dense", 4096.0, "fp8"))
    compute_s = flops / (0.253 * 2614.9e12)
    assert compute_s > nbytes / (0.80 * 5300e9)  # compute binds
    assert price.time_s == pytest.approx(compute_s + p.launch_us * 1e-6, rel=1e-9)
    assert price.roofline_s == pytest.approx(flops / 2614.9e12) and price.roofline_s < price.time_s


@pytest.mark.parametrize("tokens", [512, 2048, 8192])
def test_a_measured_mi300x_fp8_moe_layer_is_priced_near_its_measurement(tokens: int) -> None:
    """AITER's block-FP8 fused MoE of DeepSeek-V3's experts on one MI300X holding 32 of them and the shared
    expert (EP8, 9 routes per token): the twin's experts + SwiGLU ops at EP8 with ``tokens`` per GPU (8
    routed experts and the local shared one: the same GEMMs) are within 20 % of it."""
    (row,) = [r for r in microbench()["aiter-mi300x-fp8-moe-ep8"].rows if r.tokens == tokens]
    assert row.latency_us is not None
    twin_us = _ep8_experts_us("mi300x", "sglang", tokens, precision="fp8")
    assert twin_us == pytest.approx(row.latency_us, rel=0.20)


def test_hopper_prefill_attention_is_fa3s_measured_causal_curve() -> None:
    """SGLang and vLLM name FlashAttention 3 for attention on Hopper; its curve is the FA3 paper's causal,
    head-dim-128 forward table (H100), read from catalog data with that source, and it rises from 0.30 of
    the BF16 peak at 512 keys to 0.62 at 16K: below the flat 0.667 the chips carry at every length."""
    (table,) = [t for t in microbench().values() if t.kernel == "flash-attention-3"]
    assert table.op == "attention" and table.source == "https://arxiv.org/abs/2407.08608"
    for stack in ("sglang", "vllm"):
        assert stack_kernels(stack, "hopper", "attention") == ("flash-attention-3",)
    (c,) = kernel_curves("nvidia-h200", "bf16", "attention", ("flash-attention-3",))
    assert c.tables == [table.id] and c.points[0] == (512.0, 0.2952) and c.points[-1] == (16384.0, 0.6229)
    assert all(share < 0.667 for _, share in c.points)


def test_a_hopper_prefill_attention_op_at_a_curve_point_is_priced_in_closed_form() -> None:
    """A fused causal attention op over 4,096 keys on an H200 under SGLang runs at the FA3 curve's 0.5854
    of the 989 TFLOPS BF16 peak (compute binds), plus the launches; under a stack that names no attention
    kernel it keeps the chip's flat 0.667; the roofline stays below both."""
    hw, model = load_hardware("hgx-h200"), load_model("deepseek-r1")
    flops, nbytes = 2.0 * 4096 * 16 * 320 * 2048, 4096 * 16 * 640 * 2.0
    op = new_op("flash_attention", OpClass.ATTENTION, Stream.ATTENTION, flops, nbytes, kernel="attention", rows=4096.0)
    for stack, share in (("sglang", 0.5854), (None, 0.667)):
        p = pricer(plan(Deployment(phase=Phase.PREFILL, num_chips=8, stack=stack), hw, model))
        price = p.price(op)
        assert flops / (share * 989e12) > nbytes / (0.896 * 4800e9)
        assert price.time_s == pytest.approx(flops / (share * 989e12) + p.launch_us * 1e-6, rel=1e-9)
        assert price.roofline_s == pytest.approx(flops / 989e12) and price.roofline_s < price.time_s


@pytest.mark.parametrize("system", ["hgx-b200", "gb200-nvl72"])
@pytest.mark.parametrize("split", [1, 2, 4, 8])
@pytest.mark.parametrize("tokens", [1024, 4096, 16384])
def test_a_measured_w4a8_mxfp4_moe_layer_is_priced_near_its_measurement(system: str, split: int, tokens: int) -> None:
    """gpt-oss's MXFP4 experts with MXFP8 activations on Blackwell (FlashInfer's TRT-LLM-gen MoE, what vLLM
    and TensorRT-LLM ran) price from the measured prefill-shaped layers at every expert TP size, not from
    the flat efficiency (which ran a 1K prompt's MoE 1.7x too fast): the twin's experts + SwiGLU ops are
    within 15 % of AIConfigurator's measured layer (the kernel fuses the SwiGLU the twin prices apart)."""
    chip = load_hardware(system).chip.id.removeprefix("nvidia-")
    (row,) = [r for r in microbench()[f"aic-{chip}-w4a8-mxfp4-moe-tp{split}"].rows if r.tokens == tokens]
    d = Deployment(
        phase=Phase.PREFILL,
        num_chips=split,
        tp=split,
        moe_tp=split,
        attention_tp=split,
        tokens_per_chip=tokens // split,
        input_len=tokens,
        precision="fp4",
        activation_precision="fp8",
        stack="vllm",
    )
    p = plan(d, load_hardware(system), load_model("gpt-oss-120b"))
    ops = {op.name: op for op in moe_ffn(p, 1.0)}
    twin_us = sum(pricer(p).price(ops[n]).time_s for n in ("experts", "swiglu")) * 1e6
    assert twin_us == pytest.approx(row.latency_us, rel=0.15)


def test_every_quantised_moe_row_on_nvidia_prices_its_experts_from_a_measured_curve() -> None:
    """No MoE row of the shipped corpus with quantised experts on an NVIDIA chip falls back to the flat
    efficiency for its grouped GEMMs (a W4A8 layer once did, and ran its prefill 1.7-2.8x too fast)."""
    from cloudmatrix.catalog.corpus import load_corpora
    from cloudmatrix.studies.validate_run import TWIN_PRECISION

    for r in load_corpora():
        hw, weights = load_hardware(r.system), TWIN_PRECISION[r.weights]
        if load_model(r.model).moe is None or hw.system.vendor != "nvidia" or weights == "bf16":
            continue
        fmt = TWIN_PRECISION[r.activations] or weights
        found = kernel_curves(hw.chip.id, fmt, "grouped", (), weights)
        assert found or kernel_curves(hw.chip.curves_chip, fmt, "grouped", (), weights), (r.id, fmt, weights)
