"""The derived Atlas 950 SuperPoD (Ascend 950DT): Huawei's published totals (Huawei Connect 2025, XU) follow
from the per-chip catalog numbers, and every number not published is flagged assumed."""

from typing import Any

import pytest

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.sourced import DATA_DIR, read_yaml
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.estimate import estimate
from cloudmatrix.units import GB_DECIMAL, PETA, TB_DECIMAL

SYSTEM = "atlas950-superpod"
GB_PER_TB_HUAWEI = 1024  # Huawei's 1,152 TB = 8,192 x 144 GB / 1,024


def test_loads_and_is_listed() -> None:
    hw = load_hardware(SYSTEM)
    assert SYSTEM in system_ids()
    assert hw.chip.id == "ascend-950dt" and hw.chip.num_dies == 1
    assert (hw.system.num_chips, hw.num_dies, hw.scale_up_domain_dies) == (8192, 8192, 8192)
    assert hw.system.racks.value == 160


def test_derived_totals_match_published() -> None:
    hw = load_hardware(SYSTEM)
    t, published = hw.totals(), hw.system.published_totals
    dies, die = hw.num_dies, hw.chip.die
    # Huawei rounds 8,192 x 1 PF down to "8 EFLOPS" (and 16 for FP4): within 2.5 %
    assert dies * die.peak_flops("fp8") / PETA == pytest.approx(published["fp8_pflops"].value, rel=0.025)
    assert dies * die.peak_flops("fp4") / PETA == pytest.approx(published["fp4_pflops"].value, rel=0.025)
    # 1,152 TB is 8,192 x 144 GB counted 1,024 GB to the TB: exact that way, 2.4 % apart in decimal TB
    hbm_gb = t["hbm_tb"] * TB_DECIMAL / GB_DECIMAL
    assert hbm_gb / GB_PER_TB_HUAWEI == pytest.approx(published["hbm_tb"].value, rel=1e-9)
    assert t["hbm_tb"] == pytest.approx(published["hbm_tb"].value, rel=0.025)
    # 16.3 PB/s counts both directions of every chip's UB links (the catalog stores one direction)
    assert 2 * t["scale_up_tb_s"] == pytest.approx(published["scale_up_bidir_tb_s"].value, rel=0.01)
    # per chip against the 910C (reference §1.1): 2 TB/s is "2.5x" the 910C's 784 GB/s (both directions)
    cm = load_hardware("cloudmatrix384")
    ratio = hw.system.planes.scale_up.bw_gb_s_per_die.value / (
        cm.system.planes.scale_up.bw_gb_s_per_die.value * cm.chip.num_dies
    )
    assert ratio == pytest.approx(2.5, rel=0.03)


def _numbers(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        if "value" in node and isinstance(node["value"], int | float):
            out.append((path, node))
        for k, v in node.items():
            out += _numbers(v, f"{path}.{k}")
    return out


# The numbers Huawei published (XU and its coverage) or derived from them; everything else must be assumed.
PUBLISHED = {
    "ascend-950dt.yaml": {
        ".die.peak_tflops.fp8",
        ".die.peak_tflops.fp4",
        ".die.peak_tflops.mxfp8",  # "1 PFLOPS FP8/MXFP8/HiF8"
        ".die.peak_tflops.hif8",
        ".die.hbm_gb",
        ".die.hbm_bw_gb_s",
    },
    "atlas950-superpod.yaml": {
        ".racks",
        ".scale_up_domain_chips",
        ".planes.scale_up.bw_gb_s_per_die",
        ".planes.scale_up.latency_us",
        ".published_totals.fp8_pflops",
        ".published_totals.fp4_pflops",
        ".published_totals.hbm_tb",
        ".published_totals.scale_up_bidir_tb_s",
    },
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_unpublished_value_is_flagged_assumed(name: str) -> None:
    numbers = dict(_numbers(read_yaml(DATA_DIR / "hardware" / name)))
    assert PUBLISHED[name] <= set(numbers)
    for path, node in numbers.items():
        assert node.get("source"), f"{name}{path} has no source"
        if path in PUBLISHED[name]:
            assert not node.get("assumed") and "XU" in node["source"], f"{name}{path} should cite XU"
        else:
            assert node.get("assumed") is True, f"{name}{path} is not published and must be flagged assumed"
            assert node["source"].startswith("assumed"), f"{name}{path} must say why it is assumed"


def test_deepseek_r1_decode_estimate_runs() -> None:
    # One die per chip: the paper's EP320 with one expert per die needs 320 chips here (48 sequences per die).
    d = Deployment(
        phase=Phase.DECODE,
        num_chips=320,
        ep=320,
        batch_per_chip=48,
        kv_len=4096,
        mtp=1,
        mtp_acceptance=0.7,
        eplb=Eplb.DEFAULT,
        precision="fp8",
    )
    e = estimate(SYSTEM, "deepseek-r1", d)
    assert e.to_dict()["system"] == SYSTEM
    assert e.memory.total_bytes < load_hardware(SYSTEM).chip.hbm_bytes_per_die
    assert 0 < e.tpot_s < 0.1 and e.throughput_per_chip_tok_s > 0
