"""Operator builders shared by the layer kinds: a GEMM against a weight matrix, the fused norm and SwiGLU
vector ops, and the activation and logit byte widths."""

from __future__ import annotations

from cloudmatrix.catalog.kernels import best_share
from cloudmatrix.catalog.stacks import stack_kernels
from cloudmatrix.cost import comm
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
    """A GEMM of ``tokens`` rows against ``weights`` parameters, stored at the weight precision and computed
    in the activations' format (``precision`` overrides both: BF16 layers); with ``weight_shards`` > 1 the
    die holds a head-shard of the weights and processes that many times the tokens (TP), so FLOPs are
    unchanged."""
    stored, compute = precision or plan.deployment.precision, precision or plan.compute_precision
    eff_c = kernel_efficiency(plan, compute, "dense", tokens * weight_shards, stored)
    return Op(
        name=name,
        op_class=OpClass.GEMM,
        stream=stream,
        flops=2.0 * tokens * weights,
        hbm_bytes=weights / weight_shards * BYTES_PER_ELEMENT[stored] + extra_bytes,
        precision=compute,
        compute_eff=eff_c,
    )


def kernel_efficiency(plan: Plan, fmt: str, op: str, rows: float, weights: str | None = None) -> float:
    """Achieved share of peak of the fastest GEMM kernel the stack can run at ``rows`` per weight matrix,
    from the measured curves (weight-bound small M included). Curves were measured with weights in the
    compute format, so weights stored narrower (W4A8, W4A16) have none; 0 where nothing was measured (the
    chip's flat efficiency applies)."""
    if (weights or plan.deployment.precision) != fmt:
        return 0.0
    chip = plan.hardware.chip
    return best_share(chip.curves_chip, fmt, op, stack_kernels(plan.deployment.stack, chip.family, op), rows)


def norm_op(name: str, stream: Stream, tokens: float, plan: Plan) -> Op:
    """Fused residual add + RMSNorm + dynamic per-token quantisation: read x and the residual, write the
    new residual (BF16) and the GEMM input (at the GEMM precision)."""
    h = plan.model.hidden
    return Op(
        name=name,
        op_class=OpClass.VECTOR,
        stream=stream,
        flops=8.0 * tokens * h,
        hbm_bytes=tokens * h * (3 * ACT_BYTES + plan.activation_bytes),
    )


def swiglu_op(stream: Stream, rows: float, intermediate: int, plan: Plan) -> Op:
    """SiLU(gate) * up over the FFN intermediate, re-quantised for the down projection."""
    return Op(
        name="swiglu",
        op_class=OpClass.VECTOR,
        stream=stream,
        flops=6.0 * rows * intermediate,
        hbm_bytes=rows * intermediate * (2 * ACT_BYTES + plan.activation_bytes),
    )


def tp_collective(plan: Plan, kind: str, group: int, data_bytes: float, stream: Stream, name: str) -> list[Op]:
    """A collective over ``group`` dies of the instance as an op (none for a group of one)."""
    if group <= 1:
        return []
    t, sol = comm.group_collective_s(plan.hardware, kind, group, data_bytes)
    plane = comm.plane_for(plan.hardware, group).name
    return [Op(name=name, op_class=OpClass.COMM, stream=stream, comm_s=t, comm_roofline_s=sol, plane=plane)]
