"""A step (one decode iteration or one prefill batch) composed from layers, with microbatch overlap
(design.md §3 rule 3) and a breakdown that sums to the step time."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field

from cloudmatrix.catalog.stacks import stack_costs
from cloudmatrix.cost import pipeline, roofline
from cloudmatrix.cost.layers import cache_load_op, head_ops, layer_ops, mtp_extra_ops
from cloudmatrix.cost.ops import Op, OpClass, Stream, compute_sol_s, memory_s, memory_sol_s, op_time_s, roofline_s
from cloudmatrix.deploy import Phase, Plan

US = 1e6


@dataclass(frozen=True, kw_only=True)
class LayerCost:
    time_s: float
    critical_us: dict[str, float]  # ops on the critical path, µs per layer; sums to time_s
    overlapped_us: dict[str, float]  # ops hidden behind the critical path, µs per layer
    roofline_us: dict[str, float]  # speed of light of the critical path's ops, µs per layer
    bound_s: float  # the layer's roofline lower bound (cost.roofline)
    binding: str  # the resource that sets it


@dataclass(frozen=True, kw_only=True)
class StepCost:
    step_s: float
    microbatch: bool
    breakdown_us: dict[str, float]  # µs per step by op (all layers); sums to step_s
    layer_breakdown_us: dict[str, float]  # µs per layer for a representative layer (MoE if any)
    overlapped_us: dict[str, float]  # per representative layer
    roofline_us: dict[str, float]  # speed-of-light µs per step of each op in breakdown_us
    roofline_step_s: float  # the step's roofline lower bound: no prediction beats it (cost.roofline)
    roofline_binding: dict[str, str]  # per layer kind: the resource that sets its bound
    layer_us: dict[str, float] = field(default_factory=dict)  # per layer kind: µs per layer


def _core_share(op: Op, plan: Plan, stream: Stream) -> float:
    """Fraction of the die's cores the op's stream owns in the split-core decode pipeline."""
    mb, die = plan.hardware.chip.microbatch, plan.hardware.chip.die
    share = mb.attention if stream == Stream.ATTENTION else mb.moe
    assert share is not None
    if op.op_class == OpClass.VECTOR and die.vector_units:
        return share.vector / die.vector_units.value
    return share.compute / die.compute_units.value


def _prefill_compute_share(plan: Plan) -> float:
    """Cores left for compute while communication kernels hold some (DeepEP normal mode: 24 of 132 SMs)."""
    reserved = plan.hardware.chip.microbatch.prefill_comm_units
    units = plan.hardware.chip.die.compute_units.value
    return (units - reserved.value) / units if reserved else 1.0


def _serial(ops: list[Op], plan: Plan) -> LayerCost:
    chip = plan.hardware.chip
    times = {op.name: op_time_s(op, chip) * US for op in ops}
    sol = {op.name: roofline_s(op, chip) * US for op in ops}
    bound, binding = roofline.serial_bound_s(list(sol.values()))
    return LayerCost(
        time_s=sum(times.values()) / US,
        critical_us=times,
        overlapped_us={},
        roofline_us=sol,
        bound_s=bound / US,
        binding=binding,
    )


def _overlapped_bound(ops: list[Op], plan: Plan, partitions: list[str], shares: list[float]) -> tuple[float, str]:
    """Both microbatches' work on each resource at speed of light (``partitions``: each op's core
    partition, ``shares``: the fraction of the die's cores it holds)."""
    chip = plan.hardware.chip
    compute = [
        (part, compute_sol_s(op, chip, share))
        for op, part, share in zip(ops, partitions, shares, strict=True)
        if op.op_class != OpClass.COMM
    ]
    links = [(op.plane, op.comm_roofline_s) for op in ops if op.op_class == OpClass.COMM]
    return roofline.overlapped_bound_s(compute, [memory_sol_s(op, chip) for op in ops], links, copies=2)


def _pipelined(
    ops: list[Op],
    resources: list[int],
    times_us: list[float],
    floor_us: float,
    sol_us: list[float],
    bound: tuple[float, str],
) -> LayerCost:
    """Two microbatches scheduled over their resources (``cost.pipeline``). The breakdown lists the busiest
    resource's ops (both microbatches), the bubbles the dependencies leave on it, and any HBM contention;
    the other resource's ops are reported as overlapped."""
    layer_us = max(pipeline.period(pipeline.segments(resources, times_us)), floor_us)
    busy: dict[int, dict[str, float]] = {0: {}, 1: {}}
    sol: dict[int, dict[str, float]] = {0: {}, 1: {}}
    for op, r, t, light in zip(ops, resources, times_us, sol_us, strict=True):
        busy[r][op.name] = busy[r].get(op.name, 0.0) + 2 * t
        sol[r][op.name] = sol[r].get(op.name, 0.0) + 2 * light
    slow = max(busy, key=lambda r: sum(busy[r].values()))
    critical = dict(busy[slow])
    bubble = layer_us - sum(critical.values())
    if bubble > 1e-9:
        critical["hbm_contention" if floor_us >= layer_us else "pipeline_bubble"] = bubble
    return LayerCost(
        time_s=sum(critical.values()) / US,
        critical_us=critical,
        overlapped_us=busy[1 - slow],
        roofline_us=sol[slow],
        bound_s=bound[0],
        binding=bound[1],
    )


def layer_cost(plan: Plan, moe: bool, microbatch: bool) -> LayerCost:
    if not microbatch:
        return _serial(layer_ops(plan, moe, 1.0), plan)
    chip = plan.hardware.chip
    ops = layer_ops(plan, moe, 0.5)  # one of two microbatches; the schedule runs both
    sol_us = [roofline_s(op, chip) * US for op in ops]
    floor_us = 2 * sum(memory_s(op, chip) for op in ops) * US
    if plan.decodes and chip.microbatch.decode_overlap == "split":
        # Two streams on split cores (P3 §4.2.3): attention ops on one, MoE ops (with their comm) on the other.
        resources = [0 if op.stream == Stream.ATTENTION else 1 for op in ops]
        shares = [_core_share(op, plan, op.stream) for op in ops]
        times = [op_time_s(op, chip, share) * US for op, share in zip(ops, shares, strict=True)]
        bound = _overlapped_bound(ops, plan, [f"cores:{op.stream.value}" for op in ops], shares)
        return _pipelined(ops, resources, times, floor_us, sol_us, bound)
    # Alternating: all cores compute one microbatch while the other's data moves (Ascend prefill over SDMA;
    # NVIDIA two-batch overlap, with SMs held by the communication kernels in prefill).
    share = _prefill_compute_share(plan) if plan.phase == Phase.PREFILL else 1.0
    resources = [1 if op.op_class == OpClass.COMM else 0 for op in ops]
    times = [op_time_s(op, chip, share if r == 0 else 1.0) * US for op, r in zip(ops, resources, strict=True)]
    bound = _overlapped_bound(ops, plan, ["cores"] * len(ops), [share] * len(ops))
    return _pipelined(ops, resources, times, floor_us, sol_us, bound)


def _add(into: dict[str, float], items: dict[str, float], times: float, prefix: str = "") -> None:
    for name, us in items.items():
        into[prefix + name] += us * times


def step_cost(plan: Plan, microbatch: bool) -> StepCost:
    m, chip = plan.model, plan.hardware.chip
    breakdown: dict[str, float] = defaultdict(float)
    sol: dict[str, float] = defaultdict(float)
    layer_us: dict[str, float] = {}
    bound_s, binding = 0.0, dict[str, str]()
    rep: LayerCost | None = None
    for moe, count, kind in ((False, m.num_dense_layers, "dense"), (True, m.num_moe_layers, "moe")):
        if not count:
            continue
        lc = layer_cost(plan, moe, microbatch)
        _add(breakdown, lc.critical_us, count)
        _add(sol, lc.roofline_us, count)
        layer_us[kind] = lc.time_s * US
        bound_s += count * lc.bound_s
        binding[kind] = lc.binding
        rep = lc
    assert rep is not None
    extra: list[tuple[str, Op]] = []
    if plan.decodes:
        mtp = plan.deployment.mtp
        if mtp:
            # k sequential draft passes of the MTP block (a decoder layer + eh_proj + the shared head).
            # The draft passes run on the decode tokens only (not on a co-located prompt chunk).
            decode_only = dataclasses.replace(plan, tokens_per_die=plan.decode_tokens_per_die, chunk_tokens_per_die=0.0)
            draft = layer_cost(decode_only, bool(m.moe), microbatch)
            _add(breakdown, draft.critical_us, mtp, "mtp.")
            _add(sol, draft.roofline_us, mtp, "mtp.")
            bound_s += mtp * draft.bound_s
            binding["mtp"] = draft.binding
            extra += [
                ("mtp.", op) for op in mtp_extra_ops(decode_only) + head_ops(plan, plan.decode_tokens_per_die)
            ] * mtp
        extra += [("", op) for op in head_ops(plan, plan.decode_tokens_per_die)]
    else:  # only each prompt's last position needs logits
        extra += [("", op) for op in head_ops(plan, plan.seqs_per_die)]
        if plan.cached_tokens_per_die > 0:
            extra.append(("", cache_load_op(plan)))
    for prefix, op in extra:
        key = prefix + op.name
        breakdown[key] += op_time_s(op, chip) * US
        light = roofline_s(op, chip)
        sol[key] += light * US
        bound_s += light
    costs = stack_costs(plan.deployment.stack, chip.family)
    if costs is not None and costs.step_overhead_us.value > 0:  # host time the device does not hide
        breakdown["stack_step_overhead"] += costs.step_overhead_us.value
    step_s = sum(breakdown.values()) / US
    return StepCost(
        step_s=step_s,
        microbatch=microbatch,
        breakdown_us=dict(breakdown),
        layer_breakdown_us=rep.critical_us,
        overlapped_us=rep.overlapped_us,
        roofline_us=dict(sol),
        roofline_step_s=bound_s,
        roofline_binding=binding,
        layer_us=layer_us,
    )


def best_step_cost(plan: Plan) -> StepCost:
    """The step at the deployment's microbatch setting; with none set, the faster of the two graphs."""
    choice = plan.deployment.microbatch
    if choice is not None:
        return step_cost(plan, choice)
    return min((step_cost(plan, True), step_cost(plan, False)), key=lambda c: c.step_s)
