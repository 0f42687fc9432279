"""The GEMM kernels a deployment runs: curves carried into prefill shapes from prefill-shaped tables, a chip's
own curves before its sibling's, W4A16 curves only for W4A16 GEMMs at the nearest expert split, and the
kernels a deployment names replacing its stack's list where they were measured."""

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.kernels import best_share, check_kernels, curves, kernel_curves, kernel_names, microbench
from cloudmatrix.cli.app import app
from cloudmatrix.cost.ops import Op, OpClass, Stream
from cloudmatrix.cost.pricing import Pricer
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.inputs import InputError
from cloudmatrix.studies.kernel_fit import reduce_curve

PREFILL_M = (1024.0, 2048.0, 4096.0)  # rows per expert of a prefill batch (16K-128K tokens on EP2-EP32)


def _grouped(precision: str, rows: float, weights: str | None = None, split: int = 1) -> Op:
    return Op(
        name="experts",
        op_class=OpClass.GEMM,
        stream=Stream.MOE,
        flops=1e12,
        precision=precision,
        kernel="grouped",
        rows=rows,
        weights=weights or precision,
        split=split,
    )


def test_no_grouped_curve_carries_a_decode_plateau_into_prefill_shapes() -> None:
    """Wherever a grouped curve's decode-shaped tables end short of prefill shapes, the fastest kernel at a
    prefill M is one measured there (its prefill-shaped tables reach it), for every chip and format."""
    bench = microbench()
    for c in curves():
        if c.op != "grouped" or not c.prefill_tables:
            continue
        decode_end = reduce_curve([bench[t] for t in c.tables])[-1][0]
        assert c.points[-1][0] == decode_end < min(PREFILL_M) and c.growth[-1][0] >= max(PREFILL_M)
        assert [e for e, _ in c.levels] == [8.0, 32.0, 128.0, 256.0]  # EP32, EP8, EP2 and EP1 dies
    for chip, fmt in {(ch, c.format) for c in curves() if c.op == "grouped" and not c.weights for ch in c.chips}:
        found = kernel_curves(chip, fmt, "grouped")
        for m in PREFILL_M:
            best = max(found, key=lambda c: c.compute_efficiency(m))
            assert best.points[-1][0] >= m or best.growth, (chip, fmt, m, best.kernel)


@pytest.mark.parametrize("chip", ["nvidia-b200", "nvidia-gb200", "nvidia-gb300", "nvidia-b300"])
def test_nvfp4_experts_outrun_fp8_ones_at_prefill_shapes(chip: str) -> None:
    """The symptom of the held decode plateau: NVFP4 experts priced slower than FP8 at 1,000-8,000 rows."""
    die = load_hardware({"nvidia-b200": "hgx-b200", "nvidia-gb200": "gb200-nvl72", "nvidia-gb300": "gb300-nvl72",
                         "nvidia-b300": "hgx-b300"}[chip]).chip.die  # fmt: skip
    for m in PREFILL_M:
        fp4 = best_share(chip, "fp4", "grouped", (), m) * die.peak_flops("fp4")
        fp8 = best_share(chip, "fp8", "grouped", (), m) * die.peak_flops("fp8")
        assert fp4 > 1.2 * fp8, (chip, m)
        assert best_share(chip, "fp4", "grouped", (), m) > best_share(chip, "fp4", "grouped", (), 512.0)


@pytest.mark.parametrize("chip", ["nvidia-b200", "nvidia-gb200"])
def test_past_512_rows_the_share_follows_the_experts_a_die_runs(chip: str) -> None:
    """A wide-EP decode die (a few experts, 2,000 rows each) does less work per launch than a prefill die
    (128 experts): past the decode tables the level is the one measured with as many experts per die."""
    for fmt in ("fp4", "fp8"):
        few, many = (best_share(chip, fmt, "grouped", (), 2048.0, experts=e) for e in (6.0, 128.0))
        assert few < many < best_share(chip, fmt, "grouped", (), 2048.0, experts=256.0) * 1.001
        assert few < best_share(chip, fmt, "grouped", (), 2048.0, experts=32.0)


def test_a_chip_takes_its_own_curves_before_its_siblings() -> None:
    """GB300's grouped NVFP4 GEMMs reach about GB200's TFLOPS (its own tables), not GB200's share of a 1.5x
    higher peak; its dense GEMMs, measured only on GB200, still take GB200's share."""
    gb200, gb300 = Pricer(load_hardware("gb200-nvl72"), "trtllm"), Pricer(load_hardware("gb300-nvl72"), "trtllm")
    for m in (64.0, 512.0, 2048.0):
        ratio = gb200.price(_grouped("fp4", m)).time_s / gb300.price(_grouped("fp4", m)).time_s
        assert 0.8 < ratio < 1.3, m
    dense = _grouped("fp4", 4096.0)
    dense.kernel = "dense"
    assert gb300.kernel_share("fp4", "dense", 4096.0) == gb200.kernel_share("fp4", "dense", 4096.0) > 0


def test_w4a16_curves_price_only_w4a16_gemms_at_the_nearest_split() -> None:
    """vLLM's MXFP4 MoE on Hopper: a curve of its own (BF16 compute, FP4 weights) that narrows with expert
    TP; BF16 and W4A8 GEMMs never take it."""
    p = Pricer(load_hardware("hgx-h100"), "vllm")
    shares = [p.gemm_share(_grouped("bf16", 256.0, "fp4", split)) for split in (1, 2, 4, 8)]
    assert all(0 < s <= 1 for s in shares) and shares == sorted(shares, reverse=True)
    assert p.gemm_share(_grouped("bf16", 256.0, "fp4", 16)) == shares[-1]  # beyond the measured splits: nearest
    assert p.gemm_share(_grouped("bf16", 256.0)) == 0.0  # BF16 weights: no BF16 grouped curve on Hopper
    assert p.gemm_share(_grouped("fp8", 256.0, "fp4")) == 0.0  # W4A8: never measured, the flat factor applies
    blackwell = Pricer(load_hardware("hgx-b200"), "vllm")
    assert blackwell.gemm_share(_grouped("bf16", 256.0, "fp4")) == 0.0  # measured on Hopper only


def test_named_kernels_replace_the_stacks_list_where_measured() -> None:
    hw = load_hardware("hgx-h200")
    stack, deepgemm, cutlass = (Pricer(hw, "vllm", k) for k in ((), ("deepgemm",), ("cutlass",)))
    for m in (64.0, 256.0, 2048.0):
        assert stack.gemm_share(_grouped("fp8", m)) == deepgemm.gemm_share(_grouped("fp8", m))  # vLLM: DeepGEMM
        serving = hw.chip.efficiency.gemm_serving.value  # a library table's share in serving
        assert cutlass.gemm_share(_grouped("fp8", m)) == best_share(
            "nvidia-h200", "fp8", "grouped", ("cutlass",), m, serving=serving
        )
    # a named kernel without a curve for this GEMM leaves the stack's list in force
    mxfp4 = Pricer(hw, "vllm", ("cutlass",)).gemm_share(_grouped("bf16", 256.0, "fp4"))
    assert mxfp4 == stack.gemm_share(_grouped("bf16", 256.0, "fp4")) > 0


@pytest.mark.parametrize("bad", [("nosuch",), ["deepgemm", "DeepGEMM"], "deepgemm", 3])
def test_an_unknown_kernel_is_a_clear_error(bad: object) -> None:
    with pytest.raises(InputError, match=r"kernels \(--kernels\): got"):
        check_kernels(bad)
    with pytest.raises(InputError):
        Deployment(phase=Phase.DECODE, num_chips=8, kernels=bad)  # type: ignore[arg-type]
    assert check_kernels(list(kernel_names())) == kernel_names()


def test_estimate_takes_the_kernels_a_deployment_ran() -> None:
    runner = CliRunner()
    base = ["estimate", "--system", "hgx-h200", "--stack", "vllm", "--chips", "8", "--ep", "8", "--precision",
            "fp8", "--batch-per-chip", "64", "--attention-tp", "1", "--json"]  # fmt: skip
    ran = [runner.invoke(app, base + extra) for extra in ([], ["--kernels", "deepgemm"], ["--kernels", "cutlass"])]
    assert all(r.exit_code == 0 for r in ran), [r.output for r in ran]
    assert ran[0].stdout == ran[1].stdout != ran[2].stdout
    bad = runner.invoke(app, base + ["--kernels", "deepgemm,nosuch"])
    assert bad.exit_code == 2 and "kernels (--kernels): got 'nosuch'" in bad.output
