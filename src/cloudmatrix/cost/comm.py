"""Communication over a plane (design.md §3 rule 2): ``latency + bytes / (eff · bw)``, with the hop
structure of the fabric. All bandwidths are per die and unidirectional, as the paper reports them."""

from __future__ import annotations

import math
from functools import lru_cache

from cloudmatrix.catalog.hardware import Hardware, Plane
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.cost.ops import LinkRole
from cloudmatrix.deploy import BYTES_PER_ELEMENT
from cloudmatrix.errors import ConfigError
from cloudmatrix.units import GB_DECIMAL

# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_SCALE_UP, _SCALE_OUT = LinkRole.SCALE_UP, LinkRole.SCALE_OUT


def messages_per_token(plane: Plane, num_experts: int, experts_per_die: int, dies: int, top_k: int) -> float:
    """Dispatch messages a token sends: one per distinct destination die where the operator coalesces,
    else one per chosen expert."""
    if plane.ep_comm is not None and not plane.ep_comm.coalesce_per_die:
        return float(top_k)
    return distinct_destinations(num_experts, experts_per_die, dies, top_k)


@lru_cache(maxsize=1024)  # a function of the layout alone, asked for at every step
def distinct_destinations(num_experts: int, experts_per_die: int, dies: int, top_k: int) -> float:
    """Expected number of distinct dies a token's top-k experts live on (hypergeometric). Where the operator
    sends a token once per destination die (CANN's fused operators), EP8 with 32 experts per die sends ~5.3
    messages per token and EP256 sends 8: the growth of P3 Table 6 with EP."""
    if experts_per_die >= num_experts:
        return 1.0
    miss = math.comb(num_experts - experts_per_die, top_k) / math.comb(num_experts, top_k)
    return dies * (1.0 - miss)


def ep_fused_s(plane: Plane, kind: str, bytes_per_die: float, ep: int) -> tuple[float, float]:
    """MoE dispatch or combine as one fused operator (CANN AIV-Direct over UB, DeepEP over NVLink/IB) moving
    ``bytes_per_die`` through the busiest die's link: a fixed handshake (barrier, count exchange, flag
    polling, pipeline fill) plus the bytes at the operator's link efficiency. Returns (time, roofline)."""
    c = plane.ep_comm
    if c is None:
        raise ConfigError(
            f"plane {plane.name} has no EP dispatch/combine constants (planes.*.ep_comm): expert parallelism "
            "cannot span it; use an EP within the scale-up domain or add the section"
        )
    eff = c.dispatch_efficiency.value if kind == "dispatch" else c.combine_efficiency.value
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL
    sync = c.sync_us_per_doubling.value * math.log2(max(ep, 1)) if c.sync_us_per_doubling else 0.0
    time = (c.base_latency_us.value + sync) * 1e-6 + bytes_per_die / (eff * bw)
    return time, bytes_per_die / bw


def bulk_s(plane: Plane, bytes_per_die: float, peers: int, local: bool) -> tuple[float, float]:
    """A bulk collective (all-gather, all-to-all) by DMA: log2 message rounds plus the data at the plane's
    bulk efficiency (inside a node when ``local``). Returns (time, roofline)."""
    if peers <= 0 or bytes_per_die <= 0:
        return 0.0, 0.0
    lat, eff = plane.link(local)
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL
    return lat * math.ceil(math.log2(peers + 1)) + bytes_per_die / (eff * bw), bytes_per_die / bw


def ring_bytes(kind: str, group: int, data_bytes: float) -> float:
    """Bytes through each die's link in a ring collective over ``group`` dies, for ``data_bytes`` of the
    full tensor on each die: an all-gather or a reduce-scatter moves (g-1)/g of it, an all-reduce
    (reduce-scatter + all-gather) twice that."""
    rounds = 2 if kind == "all_reduce" else 1
    return rounds * (group - 1) / group * data_bytes


def cpu_link_s(hardware: Hardware, bytes_per_die: float) -> tuple[float, float]:
    """Bytes streamed from CPU memory over the die's share of its chip's CPU link (NVLink-C2C, UB, PCIe),
    at the link's efficiency. Returns (time, roofline)."""
    cpu = hardware.system.cpu
    assert cpu.link_gb_s_per_chip is not None and cpu.link_efficiency is not None
    bw = cpu.link_gb_s_per_chip.value * GB_DECIMAL / hardware.chip.num_dies
    return bytes_per_die / (bw * cpu.link_efficiency.value), bytes_per_die / bw


def transfer_s(plane: Plane, total_bytes: float, dies: int = 1) -> float:
    """A point-to-point transfer striped over ``dies`` links (e.g. a KV cache prefill → decode over RDMA)."""
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL * max(dies, 1)
    return plane.latency_us.value * 1e-6 + total_bytes / (plane.efficiency.value * bw)


def kv_handoff_s(hardware: Hardware, model: ModelSpec, input_len: int, kv_precision: str, nics: int) -> float:
    """One prompt's KV cache moved prefill → decode over the scale-out plane (RDMA), striped over the ``nics``
    of the prefill attention TP group that holds it (P3 §4.3.3)."""
    kv_bytes = model.kv_bytes(input_len, BYTES_PER_ELEMENT[kv_precision])
    return transfer_s(hardware.system.planes.scale_out, kv_bytes, dies=nics)


def plane_for(hardware: Hardware, group_dies: int) -> Plane:
    """The plane a group of ``group_dies`` ranks talks over: scale-up inside its domain, else scale-out."""
    planes = hardware.system.planes
    return planes.scale_up if group_dies <= hardware.scale_up_domain_dies else planes.scale_out


def role_for(hardware: Hardware, group_dies: int) -> LinkRole:
    """``plane_for``'s plane as a link role of an op descriptor."""
    return _SCALE_UP if group_dies <= hardware.scale_up_domain_dies else _SCALE_OUT


def plane_and_role(hardware: Hardware, group_dies: int) -> tuple[Plane, LinkRole]:
    """``plane_for`` and ``role_for`` at once."""
    planes = hardware.system.planes
    if group_dies <= hardware.scale_up_domain_dies:
        return planes.scale_up, _SCALE_UP
    return planes.scale_out, _SCALE_OUT


def cache_load_s(hardware: Hardware, plane_kind: str, bytes_per_die: float) -> tuple[float, float]:
    """Cached KV read from the EMS pool into one die (P3 §4.4.2): over UB, the die's own scale-up link
    (the pool is spread over every node's DRAM, so the die's link is the narrow end); over VPC, the node's
    storage plane shared by all its dies. Returns (time, roofline)."""
    if bytes_per_die <= 0:
        return 0.0, 0.0
    planes = hardware.system.planes
    if plane_kind == "ub":
        bw = planes.scale_up.bw_gb_s_per_die.value * GB_DECIMAL
        lat, eff = planes.scale_up.latency_us.value, planes.scale_up.efficiency.value
    else:
        if planes.storage is None:
            raise ValueError(f"{hardware.system.id} has no storage (VPC) plane to read a cache over")
        bw = planes.storage.bw_gb_s_per_node.value * GB_DECIMAL / hardware.dies_per_node
        lat, eff = planes.storage.latency_us.value, planes.storage.efficiency.value
    return lat * 1e-6 + bytes_per_die / (eff * bw), bytes_per_die / bw
