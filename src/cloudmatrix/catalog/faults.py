"""Fault rates and recovery time constants (``data/faults.yaml``): the fleet failure rates the fault model
draws from, and per chip family the fixed times a recovery takes besides the bytes it moves."""

from __future__ import annotations

from functools import lru_cache

from cloudmatrix.catalog.sourced import DATA_DIR, Frozen, Sourced, parse, read_yaml

GPU_FAMILIES = ("hopper", "blackwell", "cdna")  # families whose stacks recover as the GPU anchors' do


class FaultRates(Frozen):
    accelerator_per_hour: Sourced  # hard failures per accelerator-hour
    node_per_hour: Sourced  # node losses per node-hour
    die_share_of_accelerator: Sourced


class RecoveryConstants(Frozen):
    detect_s: Sourced  # fault to detection (heartbeat or collective timeout)
    membership_repair_s: Sourced  # EP group rebuilt around the lost rank, routing metadata updated
    engine_init_s: Sourced  # a restart's process, communicator and graph set-up, besides loading weights
    reroute_s: Sourced  # the router moves an instance's traffic to a loaded standby
    repair_s: Sourced  # a failed die is back for reintegration
    weights_gb_s_per_node: Sourced  # a restart's weight read per node where the system has no model cache


class FaultCatalog(Frozen):
    rates: FaultRates
    recovery: dict[str, RecoveryConstants]


@lru_cache(maxsize=1)
def fault_catalog() -> FaultCatalog:
    path = DATA_DIR / "faults.yaml"
    return parse(FaultCatalog, read_yaml(path), path.name)


def recovery_constants(family: str) -> RecoveryConstants:
    """A chip family's recovery constants: Ascend's own, else the GPU stacks' (EEP, SGLang Elastic EP)."""
    table = fault_catalog().recovery
    return table["ascend"] if family == "ascend" else table["gpu"]
