"""Operator builders shared by the layer kinds: a GEMM against a weight matrix, the fused norm and SwiGLU
vector ops, a collective over a group of dies, and the activation and logit byte widths. They describe;
`cost/pricing.py` prices."""

from __future__ import annotations

from cloudmatrix.cost import comm
from cloudmatrix.cost.ops import Leg, Op, OpClass, Stream, Transfer, new_op
from cloudmatrix.deploy import BYTES_PER_ELEMENT, Plan

ACT_BYTES = 2.0  # activations between kernels are BF16
LOGIT_BYTES = 4.0  # sampling works on FP32 logits
# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_GEMM, _VECTOR, _COMM, _BULK = OpClass.GEMM, OpClass.VECTOR, OpClass.COMM, Transfer.BULK


def gemm_op(
    name: str,
    stream: Stream,
    tokens: float,
    weights: float,
    plan: Plan,
    extra_bytes: float = 0.0,
    precision: str | None = None,
    weight_shards: int = 1,
) -> Op:
    """A GEMM of ``tokens`` rows against ``weights`` parameters, stored at the weight precision and computed
    in the activations' format (``precision`` overrides both: BF16 layers); with ``weight_shards`` > 1 the
    die holds a head-shard of the weights and processes that many times the tokens (TP), so FLOPs are
    unchanged and the kernel runs at that many times the rows."""
    stored, compute = precision or plan.deployment.precision, precision or plan.compute_precision
    return new_op(
        name,
        _GEMM,
        stream,
        2.0 * tokens * weights,
        weights / weight_shards * BYTES_PER_ELEMENT[stored] + extra_bytes,
        compute,
        "dense",
        tokens * weight_shards,  # rows
        stored,  # weights
    )


def norm_op(name: str, stream: Stream, tokens: float, plan: Plan) -> Op:
    """Fused residual add + RMSNorm + dynamic per-token quantisation: read x and the residual, write the
    new residual (BF16) and the GEMM input (at the GEMM precision)."""
    h = plan.model.hidden
    return new_op(name, _VECTOR, stream, 8.0 * tokens * h, tokens * h * (3 * ACT_BYTES + plan.activation_bytes))


def swiglu_op(stream: Stream, rows: float, intermediate: int, plan: Plan) -> Op:
    """SiLU(gate) * up over the FFN intermediate, re-quantised for the down projection."""
    return new_op(
        "swiglu",
        _VECTOR,
        stream,
        6.0 * rows * intermediate,
        rows * intermediate * (2 * ACT_BYTES + plan.activation_bytes),
    )


def comm_op(name: str, stream: Stream, *legs: Leg) -> Op:
    return new_op(name, _COMM, stream, legs=legs)


def tp_collective(plan: Plan, kind: str, group: int, data_bytes: float, stream: Stream, name: str) -> list[Op]:
    """A ring collective (``kind``) over ``group`` dies of the instance as an op (none for a group of one),
    on the plane the group spans."""
    if group <= 1:
        return []
    hw = plan.hardware
    moved = comm.ring_bytes(kind, group, data_bytes)
    leg = Leg(_BULK, comm.role_for(hw, group), moved, group - 1, group <= hw.dies_per_node)
    return [comm_op(name, stream, leg)]
