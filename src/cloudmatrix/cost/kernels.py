"""Operator builders shared by the layer kinds: a GEMM against a weight matrix, the fused norm and SwiGLU
vector ops, and the activation and logit byte widths."""

from __future__ import annotations

from cloudmatrix.cost.ops import Op, OpClass, Stream
from cloudmatrix.deploy import BYTES_PER_ELEMENT, Plan

ACT_BYTES = 2.0  # activations between kernels are BF16
LOGIT_BYTES = 4.0  # sampling works on FP32 logits


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
    """A GEMM of ``tokens`` rows against ``weights`` parameters; with ``weight_shards`` > 1 the die holds a
    head-shard of the weights and processes that many times the tokens (TP), so FLOPs are unchanged."""
    prec = precision or plan.deployment.precision
    return Op(
        name=name,
        op_class=OpClass.GEMM,
        stream=stream,
        flops=2.0 * tokens * weights,
        hbm_bytes=weights / weight_shards * BYTES_PER_ELEMENT[prec] + extra_bytes,
        precision=prec,
    )


def norm_op(name: str, stream: Stream, tokens: float, plan: Plan) -> Op:
    """Fused residual add + RMSNorm + dynamic per-token quantisation: read x and the residual, write the
    new residual (BF16) and the GEMM input (at the GEMM precision)."""
    h = plan.model.hidden
    return Op(
        name=name,
        op_class=OpClass.VECTOR,
        stream=stream,
        flops=8.0 * tokens * h,
        hbm_bytes=tokens * h * (3 * ACT_BYTES + plan.weight_bytes),
    )


def swiglu_op(stream: Stream, rows: float, intermediate: int, plan: Plan) -> Op:
    """SiLU(gate) * up over the FFN intermediate, re-quantised for the down projection."""
    return Op(
        name="swiglu",
        op_class=OpClass.VECTOR,
        stream=stream,
        flops=6.0 * rows * intermediate,
        hbm_bytes=rows * intermediate * (2 * ACT_BYTES + plan.weight_bytes),
    )
