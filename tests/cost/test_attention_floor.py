"""A decode attention call's fixed run time beyond its launch and its bytes (``attention_floor_us``): every
NVIDIA chip states one read from attention calls timed in captured graphs, each attention op pays it on top of
its memory term (``max(compute, memory + floor)``), no other op class does, and a chip stating none (CDNA,
Ascend) prices as before."""

import pytest

from cloudmatrix.catalog.hardware import Hardware, load_hardware, system_ids
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.cost.ops import OpClass, Stream, new_op
from cloudmatrix.cost.pricing import Pricer
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate

NVIDIA = sorted(
    {
        load_hardware(s).chip.id: s for s in system_ids() if load_hardware(s).chip.family in ("hopper", "blackwell")
    }.values()
)
# the fastest decode attention call an engine's captured graph ran on these chips (AIC-ATTN, 10th percentile of
# vLLM 0.24's tables at 1-8 sequences: 8.9-12.4 us), launch and KV write included: the floor sits below it
FASTEST_CALL_US = 8.85
DECODE = Deployment(phase=Phase.DECODE, num_chips=1, tp=1, ep=1, batch_per_chip=4, input_len=1000,
                    output_len=1000, kv_len=1500, precision="fp8", microbatch=False)  # fmt: skip


def _without_floor(hw: Hardware) -> Hardware:
    return hw.model_copy(update={"chip": hw.chip.model_copy(update={"attention_floor_us": None})})


def _floor_us(hw: Hardware) -> float:
    floor = hw.chip.attention_floor_us
    assert floor is not None
    return floor.value


@pytest.mark.parametrize("system", NVIDIA)
def test_every_nvidia_chip_states_a_sourced_floor_below_its_fastest_measured_call(system: str) -> None:
    chip = load_hardware(system).chip
    floor = chip.attention_floor_us
    assert floor is not None and floor.assumed and "AIC-ATTN" in floor.source
    assert 0 < floor.value < FASTEST_CALL_US - chip.launch_us.value


def test_chips_of_other_makers_state_none() -> None:
    for system in system_ids():
        chip = load_hardware(system).chip
        if chip.family not in ("hopper", "blackwell"):
            assert chip.attention_floor_us is None, system


@pytest.mark.parametrize("system", ["hgx-h100", "hgx-b200"])
def test_a_memory_bound_attention_call_pays_launch_bytes_and_floor_exactly(system: str) -> None:
    hw = load_hardware(system)
    px, bare = Pricer(hw, None), Pricer(_without_floor(hw), None)
    op = new_op("attention_core", OpClass.ATTENTION, Stream.ATTENTION, flops=1e6, hbm_bytes=1.5e6)
    memory_s = op.hbm_bytes / (hw.chip.efficiency.attention_memory.value * hw.chip.hbm_bw_bytes_per_s_per_die)
    launch_s = hw.chip.launch_us.value * 1e-6
    assert bare.price(op).time_s == pytest.approx(memory_s + launch_s, rel=1e-12)
    assert px.price(op).time_s == pytest.approx(memory_s + _floor_us(hw) * 1e-6 + launch_s, rel=1e-12)
    assert px.price(op).roofline_s == bare.price(op).roofline_s  # the speed of light has no floor
    assert px.price(op).memory_s == bare.price(op).memory_s  # nor the HBM time the microbatches share


def test_a_compute_bound_call_and_other_op_classes_pay_no_floor() -> None:
    hw = load_hardware("hgx-h200")
    px, bare = Pricer(hw, None), Pricer(_without_floor(hw), None)
    prefill = new_op("attention_core", OpClass.ATTENTION, Stream.ATTENTION, flops=1e13, hbm_bytes=1e6)
    assert px.price(prefill).time_s == bare.price(prefill).time_s
    for op_class in (OpClass.GEMM, OpClass.VECTOR):
        op = new_op("x", op_class, Stream.ATTENTION, flops=1e6, hbm_bytes=1.5e6)
        assert px.price(op).time_s == bare.price(op).time_s


def test_the_floor_lies_between_compute_and_memory_when_both_are_near() -> None:
    """Compute binds alone while it exceeds memory + floor; past that the floored memory term does."""
    hw = load_hardware("hgx-h200")
    px = Pricer(hw, None)
    floor_s, launch_s = _floor_us(hw) * 1e-6, hw.chip.launch_us.value * 1e-6
    op = new_op("attention_core", OpClass.ATTENTION, Stream.ATTENTION, flops=0.0, hbm_bytes=1e6)
    memory_s = px.price(op).memory_s
    compute_s = memory_s + floor_s / 2
    eff = hw.chip.efficiency.attention_compute.value
    op.flops = compute_s * eff * hw.chip.die.peak_flops("bf16")
    assert px.price(op).time_s == pytest.approx(memory_s + floor_s + launch_s, rel=1e-9)


def test_a_decode_step_grows_by_one_floor_per_layer() -> None:
    hw = load_hardware("hgx-h200")
    model = load_model("gpt-oss-120b")
    with_floor = estimate(hw, model, DECODE).step
    without = estimate(_without_floor(hw), model, DECODE).step
    grown_us = with_floor.breakdown_us["attention_core"] - without.breakdown_us["attention_core"]
    assert grown_us == pytest.approx(model.num_layers * _floor_us(hw), rel=1e-9)
    assert (with_floor.step_s - without.step_s) * 1e6 == pytest.approx(grown_us, rel=1e-9)


def test_an_override_may_set_the_floor_to_zero() -> None:
    hw = load_hardware("hgx-h100")
    zero = hw.model_copy(
        update={"chip": hw.chip.model_copy(update={"attention_floor_us": Sourced(value=0.0, source="test")})}
    )
    op = new_op("attention_core", OpClass.ATTENTION, Stream.ATTENTION, flops=1e6, hbm_bytes=1.5e6)
    assert Pricer(zero, None).price(op).time_s == Pricer(_without_floor(hw), None).price(op).time_s
