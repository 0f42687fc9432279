"""The 2026 systems (Blackwell Ultra, AMD Instinct, Ascend A2/A3): derived totals against the totals their
vendors publish, the formats each chip computes, a compare preset and a serving stack for every one."""

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.presets import presets
from cloudmatrix.catalog.stacks import load_stack
from cloudmatrix.units import PETA

NEW = ("gb300-nvl72", "hgx-b300", "mi355x", "mi300x", "mi325x", "atlas-800i-a2", "atlas-800t-a3")


def _derived(hw, key: str) -> float:
    per_node = key.endswith("_per_node")
    base = key.removesuffix("_per_node")
    fmt = base.removesuffix("_pflops")
    t = hw.totals()
    value = hw.num_dies * hw.chip.die.peak_flops(fmt) / PETA if base.endswith("_pflops") else t[base]
    return value / hw.system.nodes.value if per_node else value


@pytest.mark.parametrize("system", NEW)
def test_derived_totals_match_what_the_vendor_publishes(system: str) -> None:
    hw = load_hardware(system)
    for key, published in hw.system.published_totals.items():
        derived = _derived(hw, key)
        if system == "hgx-b300" and key == "hbm_tb_per_node":
            # NVIDIA's 2.3 TB counts 8 x 288 GB physical; the catalog holds the 270 GB a GPU exposes
            assert derived == pytest.approx(published.value * 270 / 288, rel=0.01)
            continue
        assert derived == pytest.approx(published.value, rel=0.01), key


def test_blackwell_ultra_totals_and_formats() -> None:
    gb300 = load_hardware("gb300-nvl72")
    t = gb300.totals()
    assert (t["chips"], t["cpus"]) == (72, 36) and gb300.scale_up_domain_dies == 72
    die = gb300.chip.die
    assert die.peak_flops("fp4") == 3 * die.peak_flops("fp8")  # NVFP4 is 3x FP8 on Blackwell Ultra
    assert die.peak_flops("int8") < 0.05 * die.peak_flops("fp8")  # fast INT8 was dropped
    assert gb300.system.planes.scale_out.bw_gb_s_per_die.value == 100  # ConnectX-8, 800 Gb/s per GPU


def test_amd_and_ascend_nodes() -> None:
    for sid in ("mi300x", "mi325x", "mi355x", "atlas-800i-a2", "atlas-800t-a3"):
        hw = load_hardware(sid)
        assert hw.system.chips_per_node.value == 8 and hw.system.scale_up_domain_chips.value == 8
    assert "fp4" not in load_hardware("mi300x").chip.die.peak_tflops  # CDNA3 has no FP4 units
    assert "fp4" in load_hardware("mi355x").chip.die.peak_tflops
    for sid in ("atlas-800i-a2", "atlas-800t-a3"):
        assert "fp8" not in load_hardware(sid).chip.die.peak_tflops  # 910B and 910C have no FP8
    a3, cm = load_hardware("atlas-800t-a3"), load_hardware("cloudmatrix384")
    assert a3.chip.id == cm.chip.id and a3.num_dies == 2 * a3.system.num_chips
    assert a3.scale_up_domain_dies == 16  # one node's 8 packages, not the supernode's 768 dies


@pytest.mark.parametrize("system", NEW)
def test_every_new_system_has_a_preset_a_stack_power_and_price(system: str) -> None:
    preset = presets()[system]
    assert load_stack(preset["stack"]).id == preset["stack"]
    hw = load_hardware(system)
    assert hw.system.power_kw.value > 0 and hw.system.price_usd.value > 0
    assert preset["precision"] in hw.chip.die.peak_tflops


def test_blackwell_ultra_takes_its_siblings_measured_kernel_curves() -> None:
    """GB300 and B300 have no GEMM microbenchmarks of their own: their GEMMs take GB200's and B200's
    measured share of peak at each shape (against their own peaks), not a flat efficiency."""
    from cloudmatrix.catalog.kernels import best_share

    for ultra, sibling in (("gb300-nvl72", "nvidia-gb200"), ("hgx-b300", "nvidia-b200")):
        chip = load_hardware(ultra).chip
        assert chip.curves_chip == sibling and "assumed" in chip.kernel_curves_source
        assert best_share(chip.curves_chip, "fp4", "grouped", (), 256) > 0
    assert load_hardware("mi300x").chip.curves_chip == "amd-mi300x"  # no sibling: flat efficiencies
