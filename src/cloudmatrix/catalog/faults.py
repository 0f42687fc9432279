"""Fault rates and recovery time constants (``data/faults.yaml``): the fleet failure rates the fault model
draws from, and per recovery stack (the collective substrate and engine a serving stack recovers with) the
fixed times a recovery takes besides the bytes it moves."""

from __future__ import annotations

from functools import lru_cache

from cloudmatrix.catalog.sourced import DATA_DIR, Sourced, parse, read_yaml
from cloudmatrix.catalog.strict import Frozen
from cloudmatrix.errors import ConfigError

GPU_FAMILIES = ("hopper", "blackwell", "cdna")  # families whose stacks recover as the GPU anchors' do


class FaultRates(Frozen):
    accelerator_per_hour: Sourced  # hard failures per accelerator-hour
    node_per_hour: Sourced  # node losses per node-hour
    die_share_of_accelerator: Sourced


class RecoveryConstants(Frozen):
    detect_s: Sourced  # fault to detection on the elastic path (heartbeat or collective timeout)
    restart_detect_s: Sourced  # fault to detection for a fixed-membership instance (what triggers a restart)
    membership_repair_s: Sourced  # EP group repaired around the lost rank, routing metadata updated
    engine_init_s: Sourced  # a restart's process, communicator and graph set-up, besides loading weights
    reroute_s: Sourced  # the router moves an instance's traffic to a loaded standby
    repair_s: Sourced  # a failed die is back for reintegration
    weights_gb_s_per_node: Sourced  # a restart's weight read per node where the system has no model cache


class FaultCatalog(Frozen):
    rates: FaultRates
    recovery: dict[str, RecoveryConstants]
    stack_recovery: dict[str, str]  # GPU serving stack -> recovery stack
    family_recovery: dict[str, str]  # "ascend" / "gpu" -> recovery stack for stacks not listed


@lru_cache(maxsize=1)
def fault_catalog() -> FaultCatalog:
    path = DATA_DIR / "faults.yaml"
    return parse(FaultCatalog, read_yaml(path), path.name)


def recovery_stack(family: str, stack: str | None = None, override: str | None = None) -> str:
    """The recovery stack a deployment recovers with: ``override`` if given, Ascend's own on Ascend, else the
    serving stack's (SGLang: Mooncake) or the GPU default."""
    cat = fault_catalog()
    if override is not None:
        if override not in cat.recovery:
            raise ConfigError(f"faults.recovery_stack: {override!r}; expected one of {', '.join(sorted(cat.recovery))}")
        return override
    if family == "ascend":
        return cat.family_recovery["ascend"]
    return cat.stack_recovery.get(stack or "", cat.family_recovery["gpu"])


def recovery_constants(family: str, stack: str | None = None, override: str | None = None) -> RecoveryConstants:
    """A deployment's recovery constants (see ``recovery_stack``)."""
    return fault_catalog().recovery[recovery_stack(family, stack, override)]
