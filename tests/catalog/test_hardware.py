import pytest

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.sourced import DATA_DIR, read_yaml
from cloudmatrix.errors import UnknownIdError


def test_cm384_derived_totals_match_published() -> None:
    hw = load_hardware("cloudmatrix384")
    t = hw.totals()
    assert (t["chips"], t["dies"], t["cpus"]) == (384, 768, 192)
    assert 289 * 0.999 <= t["bf16_pflops"] <= 300  # 384 x 752 = 288.8 (derived) vs ~300 (Huawei, SA)
    assert t["hbm_tb"] == pytest.approx(49.2, rel=0.01)
    assert t["hbm_bw_tb_s"] == pytest.approx(1229, rel=0.01)
    assert t["int8_pflops"] == pytest.approx(2 * t["bf16_pflops"])
    published = hw.system.published_totals
    assert t["hbm_tb"] == pytest.approx(published["hbm_tb"].value, rel=0.01)


def test_node_and_fabric_shape() -> None:
    hw = load_hardware("cloudmatrix384")
    s = hw.system
    assert (s.nodes.value, s.chips_per_node.value, s.cpu.sockets_per_node.value) == (48, 8, 4)
    assert s.switches is not None
    assert s.switches.l1_per_node.value * s.nodes.value == 336
    assert s.switches.l2_subplanes.value * s.switches.l2_per_subplane.value == 112
    # non-blocking: node uplink (7 x 448 GB/s) equals 8 NPUs x 392 GB/s (P2 §3.3.3)
    npu_ub = s.planes.scale_up.bw_gb_s_per_die.value * hw.chip.num_dies
    assert s.switches.l1_per_node.value * s.switches.l1_uplink_gb_s.value == pytest.approx(8 * npu_ub)
    assert hw.chip.num_dies == 2 and hw.chip.die.hbm_gb.value == 64


def _walk(node, path=""):
    if isinstance(node, dict):
        if "value" in node and isinstance(node["value"], int | float):
            yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")


@pytest.mark.parametrize("name", sorted(p.name for p in (DATA_DIR / "hardware").glob("*.yaml")))
def test_every_number_has_a_source(name: str) -> None:
    data = read_yaml(DATA_DIR / "hardware" / name)
    numbers = list(_walk(data))
    assert numbers
    for path, node in numbers:
        assert node.get("source"), f"{name}{path} has no source"
        if node["source"].startswith("assumed") or "CALIB" in node["source"]:
            assert node.get("assumed") or "CALIB" in node["source"], f"{name}{path} assumption not flagged"


def test_rival_systems_match_published_totals() -> None:
    nvl = load_hardware("gb200-nvl72")
    t = nvl.totals()
    assert (t["chips"], t["cpus"]) == (72, 36)
    assert t["bf16_pflops"] == pytest.approx(180, rel=0.01)
    assert t["hbm_tb"] == pytest.approx(13.8, rel=0.03)  # 186 GB/GPU (NVIDIA) vs 192 (SA)
    assert t["hbm_bw_tb_s"] == pytest.approx(576, rel=0.01)
    cm = load_hardware("cloudmatrix384").totals()
    # reference §4 ratios; SA's 1.7x uses ~300 PF for CM384 (780 TFLOPS per chip), the catalog 752 (CONFLICT)
    assert cm["bf16_pflops"] / t["bf16_pflops"] == pytest.approx(1.7, rel=0.06)
    assert cm["hbm_bw_tb_s"] / t["hbm_bw_tb_s"] == pytest.approx(2.1, rel=0.03)
    assert cm["power_kw"] / t["power_kw"] == pytest.approx(3.9, rel=0.02)
    for sid in ("hgx-h800", "hgx-h100", "hgx-h200", "hgx-b200"):
        hw = load_hardware(sid)
        assert hw.system.scale_up_domain_chips.value == 8 and hw.system.planes.scale_out.bw_gb_s_per_die.value == 50
    assert load_hardware("hgx-h800").system.planes.scale_up.bw_gb_s_per_die.value == 200  # 400 GB/s bidirectional


def test_unknown_system_lists_valid_ids() -> None:
    with pytest.raises(UnknownIdError, match="cloudmatrix384"):
        load_hardware("cm999")
    assert "cloudmatrix384" in system_ids()
