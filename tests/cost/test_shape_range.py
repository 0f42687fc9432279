"""Ops priced outside their kernel's measured shape say so (``cost/shape_range.py``): a model of its own shape
(GLM-5 and Kimi-K2's 64 heads, GLM-5's 32-head indexer, Kimi's 384 experts on few dies) or a layout beyond
the measured rows; the paper's DeepSeek-R1 decode and the vendors' defaults stay inside."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import chip_ids, load_hardware
from cloudmatrix.catalog.kernel_shapes import kernel_shapes
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cli.app import app
from cloudmatrix.cost.layers import layer_ops
from cloudmatrix.cost.shape_range import SHAPE_PREFIX, shape_reasons, shape_steps
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.estimate import estimate


def _decode(system: str, model: str, chips: int, batch: float = 32, tp: int = 1, mtp: int = 0) -> tuple[str, ...]:
    d = Deployment(phase=Phase.DECODE, num_chips=chips, batch_per_chip=batch, kv_len=4096, mtp=mtp, tp=tp)
    return shape_reasons(estimate(system, model, d).plan)


def test_the_papers_decode_and_the_cli_default_are_inside_every_measured_shape() -> None:
    assert _decode("cloudmatrix384", "deepseek-r1", 160, batch=96, mtp=1) == ()
    out = CliRunner().invoke(app, ["estimate", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["shape_extrapolating"] == []


@pytest.mark.parametrize("model", ["glm-5", "kimi-k2"])
def test_64_heads_per_die_leave_the_cann_mla_shape(model: str) -> None:
    reasons = _decode("cloudmatrix384", model, 160)
    assert reasons == (
        f"{SHAPE_PREFIX}attention_core at 64 query heads per die, outside the measured 128 (cann-mla on ascend-910c)",
    )
    # FlashMLA was timed at 16-128 heads: the same model on Hopper is inside, DeepSeek at TP16 is not
    assert not any("attention_core" in r for r in _decode("hgx-h200", model, 16, batch=8))
    assert any("8 query heads per die" in r for r in _decode("hgx-h200", "deepseek-r1", 16, batch=4, tp=16))


def test_glm5s_32_head_indexer_leaves_the_measured_scoring_kernel_on_every_gpu() -> None:
    for system in ("hgx-h200", "hgx-b200"):
        reasons = _decode(system, "glm-5", 8)
        assert any(r.startswith(f"{SHAPE_PREFIX}indexer at 32 index heads, outside the measured 64") for r in reasons)
    assert not any("indexer" in r for r in _decode("hgx-h200", "deepseek-v3.2", 8))


def test_kimis_384_experts_on_72_dies_leave_the_measured_experts_per_die() -> None:
    d = Deployment(phase=Phase.PREFILL, num_chips=72, tokens_per_chip=16384, precision="fp8", stack="sglang")
    steps = {(s.op, s.dimension): s for s in shape_steps(estimate("gb200-nvl72", "kimi-k2", d).plan)}
    experts = steps["experts", "experts per die"]
    assert experts.value < experts.lo == 8
    assert steps["experts", "rows per weight matrix"].value > steps["experts", "rows per weight matrix"].hi


def test_a_gemm_beyond_its_curves_largest_rows_says_so() -> None:
    d = Deployment(phase=Phase.PREFILL, num_chips=8, tokens_per_chip=65536, precision="fp8", stack="sglang")
    reasons = shape_reasons(estimate("hgx-b200", "deepseek-r1", d).plan)
    assert any("gate at 65,536 rows per weight matrix, outside the measured 256-16,384" in r for r in reasons)


@settings(max_examples=25, deadline=None)
@given(
    model=st.sampled_from(["deepseek-r1", "kimi-k2", "glm-5", "deepseek-v3.2", "qwen3-235b-a22b"]),
    system=st.sampled_from(["cloudmatrix384", "hgx-h200", "hgx-b200", "mi355x"]),
    tokens=st.sampled_from([2048, 16384, 65536]),
)
def test_every_step_lies_outside_its_range_and_names_it(model: str, system: str, tokens: int) -> None:
    """The class: a reason is given exactly for a value outside its measured range, never for one inside."""
    chips = 16 if system == "cloudmatrix384" else 8
    d = Deployment(phase=Phase.PREFILL, num_chips=chips, tokens_per_chip=tokens, input_len=4096)
    for s in shape_steps(plan(d, load_hardware(system), load_model(model))):  # priced whether or not it fits
        assert not s.lo <= s.value <= s.hi
        assert s.reason.startswith(SHAPE_PREFIX) and s.op in s.reason and s.chip in s.reason


def test_every_measured_shape_names_real_chips_and_ops() -> None:
    d = Deployment(phase=Phase.DECODE, num_chips=8, batch_per_chip=8)
    names = {op.name for op in layer_ops(plan(d, load_hardware("hgx-h200"), load_model("glm-5")), True)}
    for k in kernel_shapes():
        assert k.op in names
        assert set(k.chips) <= set(chip_ids())
        assert all(lo <= hi for lo, hi in k.dims.values())
