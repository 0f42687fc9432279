"""Communication over a plane (design.md §3 rule 2): ``latency + bytes / (eff · bw)``, with the hop
structure of the fabric. All bandwidths are per die and unidirectional, as the paper reports them."""

from __future__ import annotations

import math

from cloudmatrix.catalog.hardware import ScaleOutPlane, ScaleUpPlane
from cloudmatrix.units import GB_DECIMAL


def distinct_destinations(num_experts: int, experts_per_die: int, dies: int, top_k: int) -> float:
    """Expected number of distinct dies a token's top-k experts live on. A token is sent once per
    destination die (both DeepEP and CANN's fused operators coalesce), so EP8 with 32 experts per die
    sends ~5.3 messages per token and EP256 sends 8: the growth of P3 Table 6 with EP."""
    if experts_per_die >= num_experts:
        return 1.0
    miss = math.comb(num_experts - experts_per_die, top_k) / math.comb(num_experts, top_k)
    return dies * (1.0 - miss)


def ep_fused_s(plane: ScaleUpPlane, kind: str, bytes_per_die: float) -> tuple[float, float]:
    """Fused MoE dispatch or combine (AIV-Direct writes over UB, P3 §4.2.1) moving ``bytes_per_die``
    through the busiest die's link: a fixed handshake (barrier, count exchange, flag polling, pipeline
    fill) plus the bytes at the operator's link efficiency. Returns (time, roofline)."""
    c = plane.ep_comm
    eff = c.dispatch_efficiency.value if kind == "dispatch" else c.combine_efficiency.value
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL
    time = c.base_latency_us.value * 1e-6 + bytes_per_die / (eff * bw)
    return time, bytes_per_die / bw


def scale_up_bulk_s(plane: ScaleUpPlane, bytes_per_die: float, peers: int, inter_node: bool) -> tuple[float, float]:
    """A bulk collective (all-gather, all-to-all) over UB by DMA: one message round per peer, the data at the
    measured per-die write efficiency. Returns (time, roofline)."""
    if peers <= 0 or bytes_per_die <= 0:
        return 0.0, 0.0
    lat = (plane.latency_us_inter_node if inter_node else plane.latency_us_intra_node).value * 1e-6
    eff = (plane.efficiency_inter_node if inter_node else plane.efficiency_intra_node).value
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL
    return lat * math.ceil(math.log2(peers + 1)) + bytes_per_die / (eff * bw), bytes_per_die / bw


def scale_out_s(plane: ScaleOutPlane, total_bytes: float, dies: int = 1) -> float:
    """A point-to-point transfer over RDMA striped over ``dies`` NICs (e.g. a KV cache prefill → decode)."""
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL * max(dies, 1)
    return plane.latency_us.value * 1e-6 + total_bytes / (plane.efficiency.value * bw)
