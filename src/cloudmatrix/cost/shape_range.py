"""Which ops of a step are priced at a shape outside what their kernel was measured at: a model of its own
shape (64 heads, 384 experts, a 32-head indexer) or a layout (attention TP, few experts per die, large
prefill batches) can leave the shapes the measured efficiencies came from. Each such op gives one
``ShapeStep``, whose ``reason`` is the ``extrapolating`` text an answer carries (the interval code widens
on it). Only ops with a measurement on the chip are checked: an op priced by an assumed efficiency has no
measured range to leave.

Checked: GEMMs against their kernel curve (rows per weight matrix above the largest measured; experts per
die outside the measured levels where the curve uses them), the MLA decode core against its kernel's
measured query heads per die and query tokens per sequence, and the DSA indexer against its kernel's
measured heads and head width."""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.catalog.kernel_shapes import curve_experts_measured, curve_rows_measured, measured_shape
from cloudmatrix.catalog.kernels import KernelCurve, kernel_curves, serving_share
from cloudmatrix.catalog.stacks import stack_kernels
from cloudmatrix.cost.layers import head_ops, layer_ops
from cloudmatrix.cost.ops import Op, OpClass
from cloudmatrix.cost.pricing import moe_gathered
from cloudmatrix.deploy import Plan

SHAPE_PREFIX = "kernel shape: "  # every reason starts so (a reader can tell them from the other reasons)


@dataclass(frozen=True, slots=True)
class ShapeStep:
    """One op priced outside its kernel's measured shape, in one dimension."""

    op: str
    dimension: str  # what is outside, in words: "query heads per die", "rows per weight matrix", ...
    value: float
    lo: float
    hi: float
    kernel: str  # the measurement: a shapes.yaml id or ``<kernel> <op> <format>`` of a GEMM curve
    chip: str

    @property
    def reason(self) -> str:
        span = _shown(self.lo) if self.lo == self.hi else f"{_shown(self.lo)}-{_shown(self.hi)}"
        return (
            f"{SHAPE_PREFIX}{self.op} at {_shown(self.value)} {self.dimension}, outside the measured {span} "
            f"({self.kernel} on {self.chip})"
        )


def _shown(x: float) -> str:
    """``65,536`` or ``5.33``."""
    return f"{x:,.0f}" if x >= 100 or x == int(x) else f"{x:.3g}"


def shape_steps(plan: Plan) -> tuple[ShapeStep, ...]:
    """Every op of the plan's step (a MoE and a dense layer, and the head) priced outside its kernel's
    measured shape, each dimension once per op name."""
    m = plan.model
    head_tokens = plan.decode_tokens_per_die if plan.decodes else plan.seqs_per_die  # prefill: last positions
    ops = layer_ops(plan, moe=m.moe is not None) + head_ops(plan, head_tokens)
    if m.moe is not None and m.moe_layer_ids and len(m.moe_layer_ids) < m.num_layers:
        ops += layer_ops(plan, moe=False)
    found: dict[tuple[str, str], ShapeStep] = {}
    for op in ops:
        for step in _gemm_steps(plan, op) if op.op_class is OpClass.GEMM else _attention_steps(plan, op):
            found.setdefault((step.op, step.dimension), step)
    return tuple(found.values())


def shape_reasons(plan: Plan) -> tuple[str, ...]:
    """The ``extrapolating`` reasons of :func:`shape_steps`."""
    return tuple(s.reason for s in shape_steps(plan))


def _gemm_steps(plan: Plan, op: Op) -> list[ShapeStep]:
    curve = _curve(plan, op)
    if curve is None:
        return []
    chip, name = plan.hardware.chip.id, f"{curve.kernel} {curve.op} {curve.format}"
    steps = []
    hi = curve_rows_measured(curve)
    if op.rows > hi:
        steps.append(ShapeStep(op.name, "rows per weight matrix", op.rows, curve.points[0][0], hi, name, chip))
    experts = curve_experts_measured(curve)
    if experts and op.rows > curve.points[-1][0] and op.groups and not experts[0] <= op.groups <= experts[1]:
        steps.append(ShapeStep(op.name, "experts per die", op.groups, experts[0], experts[1], name, chip))
    return steps


def _curve(plan: Plan, op: Op) -> KernelCurve | None:
    """The measured curve that prices a GEMM op (the fastest at its rows of those the engine picks from,
    the chip's own curves before its sibling's), as `cost/pricing.py` picks it; None: flat efficiency."""
    if not op.kernel:
        return None
    chip = plan.hardware.chip
    stored = op.weights or op.precision
    serving = chip.efficiency.gemm_serving.value
    for curves_of in (chip.id, chip.curves_chip):
        named = plan.deployment.kernels
        if not any(
            c.kernel in named for c in kernel_curves(curves_of, op.precision, op.kernel, named, stored, op.split)
        ):
            named = stack_kernels(plan.deployment.stack, chip.family, op.kernel, moe_gathered(plan))
        found = kernel_curves(curves_of, op.precision, op.kernel, named, stored, op.split)
        if found:
            return max(found, key=lambda c: serving_share(c, chip.id, op.rows, op.groups, serving))
    return None


def _attention_steps(plan: Plan, op: Op) -> list[ShapeStep]:
    a, chip = plan.model.attention, plan.hardware.chip.id
    shape = measured_shape(chip, op.name, a.kind)
    if shape is None:
        return []
    values: dict[str, float] = {}
    if op.name == "attention_core" and plan.decodes and plan.seqs_per_die > 0:
        values = {
            "query_heads_per_die": a.num_heads / plan.tp,
            "queries_per_sequence": plan.decode_tokens_per_die / plan.seqs_per_die,
        }
    elif op.name == "indexer" and a.indexer is not None:
        values = {"index_heads": a.indexer.num_heads, "index_head_dim": a.indexer.head_dim}
    steps = []
    for dim, value in values.items():
        lo, hi = shape.dims.get(dim, (value, value))
        if not lo - 1e-9 <= value <= hi + 1e-9:
            steps.append(ShapeStep(op.name, dim.replace("_", " "), value, lo, hi, shape.id, chip))
    return steps
