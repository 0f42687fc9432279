import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.model_load import (
    ModelCacheTimes,
    ems_model_slots,
    fit_model_load,
    model_bytes,
    model_cache_times,
    obs_load_s,
    warm_start_s,
)
from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError

CM = load_hardware("cloudmatrix384")
R1_BYTES = model_bytes(load_model("deepseek-r1"), "int8")  # ~671 GB (P3 §4.4.3)


def _table1() -> ModelCacheTimes:
    # P3 Table 1: 8 instances in a CM384, i.e. 48 NPUs each
    return model_cache_times(CM, R1_BYTES, instances=8, chips_per_instance=48)


def test_model_bytes() -> None:
    assert model_bytes(load_model("deepseek-r1"), "int8") == pytest.approx(671e9, rel=0.001)
    assert model_bytes(load_model("deepseek-r1"), "bf16") == 2 * R1_BYTES


def test_closed_forms() -> None:
    ems, cpu = CM.system.ems, CM.system.cpu
    assert ems is not None and cpu.ub_bw_gb_s_per_socket is not None
    one = R1_BYTES / (ems.obs_bucket_bw_gb_s.value * 1e9 * ems.obs_efficiency.value)
    assert obs_load_s(CM, R1_BYTES, 1, 48) == pytest.approx(one)
    assert obs_load_s(CM, R1_BYTES, 8, 48) == pytest.approx(8 * one)  # the bucket is shared fairly
    socket = min(cpu.ub_bw_gb_s_per_socket.value, cpu.dram_bw_gb_s_per_socket.value) * 1e9
    leg = R1_BYTES / (6 * 4 * socket * ems.ub_read_efficiency.value)  # 48 NPUs = 6 nodes of 4 sockets
    assert warm_start_s(CM, R1_BYTES, 48) == pytest.approx(ems.warm_setup_s.value + leg)
    t = _table1()
    assert t.cold_ems_s == pytest.approx(one + t.warm_s) == t.switch_none_s
    assert t.cold_obs_s == pytest.approx(8 * one + t.warm_s)
    assert t.switch_local_s == pytest.approx(0.125 * t.warm_s + 0.875 * t.cold_ems_s)
    assert t.switch_ems_s == pytest.approx(t.warm_s)
    assert (t.local_hit_rate, t.ems_hit_rate, t.dram_overhead_local, t.dram_overhead_ems) == (0.125, 1.0, 8.0, 1.0)


def test_fitted_rows_are_reproduced() -> None:
    # warm_setup_s is fitted on the warm start (~5 s), obs_efficiency on the EMS cold start (~320 s)
    t = _table1()
    assert t.warm_s == pytest.approx(5, rel=0.005)
    assert t.cold_ems_s == pytest.approx(320, rel=0.005)
    ems = CM.system.ems
    assert ems is not None and "CALIB" in ems.warm_setup_s.source and "CALIB" in ems.obs_efficiency.source
    setup_s, obs_eff = fit_model_load(CM, R1_BYTES, 48, warm_s=5.0, cold_single_s=320.0)
    assert setup_s == pytest.approx(ems.warm_setup_s.value, abs=0.005)  # the catalog rounds the fits
    assert obs_eff == pytest.approx(ems.obs_efficiency.value, abs=0.0005)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_model_load(CM, R1_BYTES, 48, warm_s=0.1, cold_single_s=320.0)


@pytest.mark.parametrize(
    ("field", "published"),
    [("cold_obs_s", 2560), ("switch_none_s", 320), ("switch_local_s", 281), ("switch_ems_s", 5)],
)
def test_predicted_rows_within_15_percent(field: str, published: float) -> None:
    assert getattr(_table1(), field) == pytest.approx(published, rel=0.15)


def test_ems_hit_rate_follows_pool_capacity() -> None:
    slots = ems_model_slots(CM, R1_BYTES)
    assert slots == 73  # 49.2 TB of pool (assumed half of 2 TB per node) / 671 GB
    t = model_cache_times(CM, R1_BYTES, 8, 48, models=2 * slots)
    assert t.ems_hit_rate == pytest.approx(0.5, abs=0.01) and t.local_hit_rate == pytest.approx(1 / (2 * slots))
    assert t.warm_s < t.switch_ems_s < t.switch_local_s < t.switch_none_s
    two = model_cache_times(CM, R1_BYTES, 8, 48, local_cache_models=2)
    assert two.local_hit_rate == 0.25 and two.switch_local_s < _table1().switch_local_s


def test_monotonic_and_bounded() -> None:
    small, big = model_cache_times(CM, R1_BYTES, 2, 48), model_cache_times(CM, R1_BYTES, 8, 48)
    assert small.cold_obs_s < big.cold_obs_s and small.cold_ems_s == pytest.approx(big.cold_ems_s)
    # fewer nodes per instance: a narrower DRAM -> NPU path, a slower warm start
    assert warm_start_s(CM, R1_BYTES, 8) > warm_start_s(CM, R1_BYTES, 48)


def test_errors() -> None:
    with pytest.raises(InfeasibleDeploymentError, match="exceed"):
        model_cache_times(CM, R1_BYTES, 9, 48)
    with pytest.raises(ValueError):
        model_cache_times(CM, 0, 8, 48)
    with pytest.raises(ConfigError, match="no ems section"):
        model_cache_times(load_hardware("hgx-h800"), R1_BYTES, 1, 8)
