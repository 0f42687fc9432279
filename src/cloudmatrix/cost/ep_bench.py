"""The EP dispatch/combine microbenchmark (P3 Table 6, DeepEP's tables): which plane a row ran on and the
bytes one rank sends, shared by `reproduce` (predicting the rows) and `calibrate` (fitting ``ep_comm``)."""

from __future__ import annotations

from typing import Any

from cloudmatrix.catalog.hardware import Hardware, Plane
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.cost.comm import messages_per_token
from cloudmatrix.cost.kernels import ACT_BYTES


def ep_plane(hardware: Hardware, setup: dict[str, Any]) -> Plane:
    """The plane a microbenchmark row ran on (`plane: scale_up | scale_out` in its setup)."""
    return getattr(hardware.system.planes, setup.get("plane", "scale_up"))


def ep_message_bytes(
    model: ModelSpec, op: str, tokens_per_rank: int, ep: int, plane: Plane, dispatch_bytes: float = 1.0
) -> float:
    """Bytes one rank sends in the microbenchmark (experts spread evenly over ``ep`` ranks): each token once
    per distinct destination die, INT8 payload + padded scale for dispatch (7.5 KB for DeepSeek), BF16 for
    combine (14 KB)."""
    assert model.moe is not None
    n = model.moe.num_routed
    dests = messages_per_token(plane, n, max(n // ep, 1), ep, model.moe.top_k)
    if op == "dispatch":
        assert plane.ep_comm is not None
        msg = model.hidden * dispatch_bytes + plane.ep_comm.scale_bytes_per_token.value
    else:
        msg = model.hidden * ACT_BYTES
    return tokens_per_rank * dests * msg * (ep - 1) / ep  # messages to the rank itself stay local
