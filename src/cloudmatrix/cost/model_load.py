"""Model caching (P3 §4.4.3, Table 1): how long instances take to get their weights into HBM, cold from the
OBS bucket or warm from DRAM, with no cache, a per-instance local DRAM cache, or the shared EMS pool.

A cold load streams the weights from the OBS bucket, whose bandwidth every concurrent load shares, into
DRAM, and then warm-starts from there. A warm start moves the weights from CPU DRAM to the instance's NPUs
over UB plus a fixed runtime setup. A model switch hits the cache with some probability and otherwise does
one cold load on its own (switches are not simultaneous).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudmatrix.catalog.hardware import EmsSpec, Hardware, ems_pool_bytes
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.deploy import BYTES_PER_ELEMENT
from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError
from cloudmatrix.units import GB_DECIMAL


@dataclass(frozen=True, kw_only=True)
class ModelCacheTimes:
    """Times in seconds and DRAM overheads in copies of the model (P3 Table 1's rows)."""

    cold_obs_s: float  # every instance loads from OBS at once: no cache, or a local DRAM cache
    cold_ems_s: float  # one OBS load fills the EMS pool, then every instance warm-starts from it
    warm_s: float  # DRAM -> NPU, from local DRAM or from the EMS pool
    switch_none_s: float  # average model switch without a cache: always one cold load
    switch_local_s: float
    switch_ems_s: float
    local_hit_rate: float
    ems_hit_rate: float
    # DRAM that one model served by every instance takes, in model sizes (Table 1's cold-start rows)
    dram_overhead_local: float  # every instance keeps its own copy
    dram_overhead_ems: float  # one shared copy in the pool


def model_bytes(model: ModelSpec, precision: str) -> float:
    """Weight bytes of a model at a precision (main model; MTP layers are not counted, as model cards do)."""
    return model.total_params() * BYTES_PER_ELEMENT[precision]


def _ems(hw: Hardware) -> EmsSpec:
    if hw.system.ems is None:
        raise ConfigError(f"system '{hw.system.id}' has no ems section (no model-cache constants)")
    return hw.system.ems


def _instance_nodes(hw: Hardware, chips_per_instance: int) -> int:
    return max(1, math.ceil(chips_per_instance / hw.system.chips_per_node.value))


def obs_load_s(hw: Hardware, model_bytes: float, concurrent_loads: int, chips_per_instance: int) -> float:
    """Seconds for each of ``concurrent_loads`` loads of the model from the OBS bucket, sharing it fairly,
    so all finish together (P3 §4.4.3: 8 concurrent loads take 8x one load). Each load also cannot beat its
    own nodes' storage (VPC) links, which at 50 GB/s per node never bind against a 2.5 GB/s bucket."""
    ems = _ems(hw)
    rate = ems.obs_bucket_bw_gb_s.value * GB_DECIMAL * ems.obs_efficiency.value / concurrent_loads
    storage = hw.system.planes.storage
    if storage is not None:
        node_bw = storage.bw_gb_s_per_node.value * GB_DECIMAL * storage.efficiency.value
        rate = min(rate, _instance_nodes(hw, chips_per_instance) * node_bw)
    return model_bytes / rate


def warm_start_s(hw: Hardware, model_bytes: float, chips_per_instance: int) -> float:
    """DRAM -> NPU: the bytes cross UB from the CPU sockets of the instance's nodes (each socket limited by
    its UB link or its DRAM, whichever is lower; P2 §3.3.2), plus the fixed runtime setup. With EMS the
    bytes come from every node of the pool, but the instances read it at once, so each still gets about
    its own nodes' share."""
    ems, cpu = _ems(hw), hw.system.cpu
    ub = cpu.ub_bw_gb_s_per_socket.value if cpu.ub_bw_gb_s_per_socket else math.inf
    socket_bw = min(ub, cpu.dram_bw_gb_s_per_socket.value) * GB_DECIMAL
    path_bw = _instance_nodes(hw, chips_per_instance) * cpu.sockets_per_node.value * socket_bw
    return ems.warm_setup_s.value + model_bytes / (path_bw * ems.ub_read_efficiency.value)


def ems_model_slots(hw: Hardware, model_bytes: float) -> int:
    """Whole copies of the model the EMS pool of the full system holds."""
    return int(ems_pool_bytes(hw, int(hw.system.nodes.value)) // model_bytes)


def model_cache_times(
    hw: Hardware,
    model_bytes: float,
    instances: int,
    chips_per_instance: int,
    *,
    models: int | None = None,
    local_cache_models: int = 1,
) -> ModelCacheTimes:
    """P3 Table 1 for ``instances`` instances of ``chips_per_instance`` chips switching among ``models``
    distinct models (default: one per instance). Each instance's local DRAM cache keeps
    ``local_cache_models`` models (Table 1: the one it serves), so a switch hits it with probability
    ``local_cache_models / models``; EMS hits whenever the pool holds every model."""
    if instances < 1 or chips_per_instance < 1 or model_bytes <= 0:
        raise ValueError("instances, chips_per_instance and model_bytes must be positive")
    if instances * chips_per_instance > hw.system.num_chips:
        raise InfeasibleDeploymentError(
            f"{instances} instances x {chips_per_instance} chips exceed the {hw.system.num_chips} chips of "
            f"{hw.system.id}"
        )
    n_models = models if models is not None else instances
    warm = warm_start_s(hw, model_bytes, chips_per_instance)
    cold_single = obs_load_s(hw, model_bytes, 1, chips_per_instance) + warm
    local_hit = min(1.0, local_cache_models / n_models)
    ems_hit = min(1.0, ems_model_slots(hw, model_bytes) / n_models)
    return ModelCacheTimes(
        cold_obs_s=obs_load_s(hw, model_bytes, instances, chips_per_instance) + warm,
        cold_ems_s=cold_single,
        warm_s=warm,
        switch_none_s=cold_single,
        switch_local_s=_switch_s(local_hit, warm, cold_single),
        switch_ems_s=_switch_s(ems_hit, warm, cold_single),
        local_hit_rate=local_hit,
        ems_hit_rate=ems_hit,
        dram_overhead_local=float(instances),
        dram_overhead_ems=1.0,
    )


def _switch_s(hit_rate: float, warm_s: float, cold_s: float) -> float:
    # P3 Table 1: average switch = hit x warm + miss x one cold load (12.5 % x 5 + 87.5 % x 320 ≈ 281 s)
    return hit_rate * warm_s + (1.0 - hit_rate) * cold_s


def fit_model_load(
    hw: Hardware, model_bytes: float, chips_per_instance: int, warm_s: float, cold_single_s: float
) -> tuple[float, float]:
    """The two fitted constants, in closed form, from a published warm start and a published single cold
    load (P3 Table 1: ~5 s and ~320 s with EMS): (warm_setup_s, obs_efficiency). The storage-link cap of
    ``obs_load_s`` is assumed not to bind, as it does not for a 2.5 GB/s bucket."""
    ems = _ems(hw)
    transfer_s = warm_start_s(hw, model_bytes, chips_per_instance) - ems.warm_setup_s.value
    obs_s = cold_single_s - warm_s
    if warm_s <= transfer_s or obs_s <= 0:
        raise ValueError(f"cannot fit: warm {warm_s} s must exceed the {transfer_s:.3g} s transfer and cold")
    return warm_s - transfer_s, model_bytes / (ems.obs_bucket_bw_gb_s.value * GB_DECIMAL * obs_s)
