"""A step (one decode iteration or one prefill batch) composed from layers, with microbatch overlap
(design.md §3 rule 3) and a breakdown that sums to the step time."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from cloudmatrix.catalog.stacks import stack_costs
from cloudmatrix.cost import eagle, pipeline, roofline
from cloudmatrix.cost.layers import attention_ops, cache_load_op, ffn_ops, head_ops, mtp_extra_ops
from cloudmatrix.cost.ops import Op, OpClass, Stream
from cloudmatrix.cost.pricing import Price, graph_launch_s, pricer
from cloudmatrix.deploy import Phase, Plan
from cloudmatrix.frozen import fill_dict_init

US = 1e6
# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_COMM, _VECTOR, _ATTENTION_STREAM, _PREFILL = OpClass.COMM, OpClass.VECTOR, Stream.ATTENTION, Phase.PREFILL


@dataclass(slots=True)
class LayerCost:
    """A layer kind's time and breakdown, with the prices behind them: its roofline (``roofline``) is worked
    out only for the graph a step reports, not for the one it loses to."""

    time_s: float
    critical_us: dict[str, float]  # ops on the critical path, µs per layer; sums to time_s
    overlapped_us: dict[str, float]  # ops hidden behind the critical path, µs per layer
    ops: list[Op]
    prices: list[Price]
    resources: list[int]  # microbatched: each op's resource (the critical path's is ``slow``); serial: empty
    partitions: list[str]  # microbatched: each op's core partition
    slow: int = 0
    bound: tuple[dict[str, float], float, str] | None = None  # ``roofline``'s answer, once asked

    def roofline(self) -> tuple[dict[str, float], float, str]:
        """(speed of light of the critical path's ops in µs per layer, the layer's roofline lower bound in s
        (cost.roofline), the resource that sets it)."""
        if self.bound is None:
            self.bound = _serial_roofline(self) if not self.resources else _overlapped_roofline(self)
        return self.bound


@fill_dict_init
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


def _prefill_compute_share(plan: Plan) -> float:
    """Cores left for compute while communication kernels hold some (DeepEP normal mode: 24 of 132 SMs)."""
    reserved = plan.hardware.chip.microbatch.prefill_comm_units
    units = plan.hardware.chip.die.compute_units.value
    return (units - reserved.value) / units if reserved else 1.0


def _serial(ops: list[Op], prices: list[Price]) -> LayerCost:
    times = {}
    for op, p in zip(ops, prices, strict=True):
        times[op.name] = p[0] * US  # time_s
    return LayerCost(sum(times.values()) / US, times, {}, ops, prices, [], [])


def _serial_roofline(layer: LayerCost) -> tuple[dict[str, float], float, str]:
    sol = {op.name: p.roofline_s * US for op, p in zip(layer.ops, layer.prices, strict=True)}
    bound, binding = roofline.serial_bound_s(list(sol.values()))
    return sol, bound / US, binding


def _overlapped_roofline(layer: LayerCost) -> tuple[dict[str, float], float, str]:
    """The critical resource's ops at speed of light (both microbatches), and the bound: both microbatches'
    work on each resource at speed of light (each op's core partition, HBM, its link)."""
    sol: dict[str, float] = {}
    compute, links, slow = [], [], layer.slow
    for op, r, p, part in zip(layer.ops, layer.resources, layer.prices, layer.partitions, strict=True):
        if r == slow:
            sol[op.name] = sol.get(op.name, 0.0) + 2 * (p.roofline_s * US)
        if op.op_class is _COMM:
            links.append((p.link, p.roofline_s))
        else:
            compute.append((part, p.compute_sol_s))
    bound, binding = roofline.overlapped_bound_s(compute, [p.memory_sol_s for p in layer.prices], links, copies=2)
    return sol, bound, binding


def _pipelined(
    ops: list[Op], resources: list[int], prices: list[Price], partitions: list[str], budget_us: float
) -> LayerCost | None:
    """Two microbatches scheduled over their resources (``cost.pipeline``). The breakdown lists the busiest
    resource's ops (both microbatches), the bubbles the dependencies leave on it, and any HBM contention;
    the other resource's ops are reported as overlapped. None for a layer over ``budget_us``."""
    times_us = [p[0] * US for p in prices]  # time_s
    floor_us = 2 * sum([p[1] for p in prices]) * US  # memory_s: both microbatches share HBM
    layer_us = max(pipeline.ops_period(resources, times_us), floor_us)
    if layer_us > budget_us:
        return None
    busy: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for op, r, t in zip(ops, resources, times_us, strict=True):
        on = busy[r]
        on[op.name] = on.get(op.name, 0.0) + 2 * t
    sums = sum(busy[0].values()), sum(busy[1].values())
    slow = 1 if sums[1] > sums[0] else 0  # the first of equals, as max() picks
    critical = dict(busy[slow])
    bubble = layer_us - sums[slow]
    if bubble > 1e-9:
        critical["hbm_contention" if floor_us >= layer_us else "pipeline_bubble"] = bubble
    return LayerCost(sum(critical.values()) / US, critical, busy[1 - slow], ops, prices, resources, partitions, slow)


@dataclass(slots=True)  # not frozen: frozen dataclasses are slow to make, and this one is internal
class _Priced:
    """Ops with their prices, and in a microbatched graph each op's resource and core partition."""

    ops: list[Op]
    prices: list[Price]
    resources: list[int]
    partitions: list[str]


def _price_ops(plan: Plan, ops: list[Op], microbatch: bool) -> _Priced:
    px = pricer(plan)
    if not microbatch:
        return _Priced(ops, [px.price(op) for op in ops], [], [])
    if plan.decodes and plan.hardware.chip.microbatch.decode_overlap == "split":
        # Two streams on split cores (P3 §4.2.3): attention ops on one, MoE ops (with their comm) on the other.
        split = px.core_shares
        prices, resources, partitions = [], [], []
        for op in ops:
            stream = op.stream
            prices.append(px.price(op, split[stream, op.op_class is _VECTOR]))
            on_attention = stream is _ATTENTION_STREAM
            resources.append(0 if on_attention else 1)
            partitions.append(_ATTENTION_CORES if on_attention else _STREAM_CORES[stream])
        return _Priced(ops, prices, resources, partitions)
    # Alternating: all cores compute one microbatch while the other's data moves (Ascend prefill over SDMA;
    # NVIDIA two-batch overlap, with SMs held by the communication kernels in prefill).
    share = _prefill_compute_share(plan) if plan.phase is _PREFILL else 1.0
    resources = [1 if op.op_class is _COMM else 0 for op in ops]
    prices = [px.price(op, share if r == 0 else 1.0) for op, r in zip(ops, resources, strict=True)]
    return _Priced(ops, prices, resources, ["cores"] * len(ops))


_STREAM_CORES = {stream: f"cores:{stream.value}" for stream in Stream}
_ATTENTION_CORES = _STREAM_CORES[Stream.ATTENTION]


def _attention(plan: Plan, microbatch: bool) -> _Priced:
    """The attention half of every layer of the graph, priced once for both layer kinds."""
    return _price_ops(plan, attention_ops(plan, 0.5 if microbatch else 1.0), microbatch)


def _layer(
    plan: Plan, moe: bool, microbatch: bool, attention: _Priced, budget_us: float = math.inf
) -> LayerCost | None:
    """One layer kind of the graph; None for a microbatched layer over ``budget_us``."""
    ffn = _price_ops(plan, ffn_ops(plan, moe, 0.5 if microbatch else 1.0), microbatch)
    ops, prices = attention.ops + ffn.ops, attention.prices + ffn.prices
    if not microbatch:
        return _serial(ops, prices)
    resources, partitions = attention.resources + ffn.resources, attention.partitions + ffn.partitions
    return _pipelined(ops, resources, prices, partitions, budget_us)


def layer_cost(plan: Plan, moe: bool, microbatch: bool) -> LayerCost:
    """One decoder layer, serial or as two microbatches (each of half the batch; the schedule runs both)."""
    cost = _layer(plan, moe, microbatch, _attention(plan, microbatch))
    assert cost is not None
    return cost


def _add(into: dict[str, float], items: dict[str, float], times: float, prefix: str = "") -> None:
    if not into and not prefix:  # the first items: the same keys and floats as the loop below, in one pass
        into.update({name: 0.0 + us * times for name, us in items.items()})
        return
    get = into.get  # a plain dict: a defaultdict's missing-key path costs more than the sum
    if prefix:
        for name, us in items.items():
            key = prefix + name
            into[key] = get(key, 0.0) + us * times
    else:
        for name, us in items.items():
            into[name] = get(name, 0.0) + us * times


def _layer_costs(
    plan: Plan, microbatch: bool, beat_s: float | None, fixed_s: float = 0.0
) -> dict[bool, LayerCost] | None:
    """Each layer kind's cost (keyed by MoE or not), the most numerous kind first; None as soon as those
    layers, with the step's ``fixed_s`` (its once-per-step ops, the same in either graph) and the MTP draft
    passes that repeat a layer, take longer than ``beat_s`` (the graph cannot be the faster one)."""
    m = plan.model
    kinds = sorted(((m.num_moe_layers, True), (m.num_dense_layers, False)), reverse=True)
    layers, partial_s = {}, 0.0
    attention = _attention(plan, microbatch)
    # a margin: the step sums its breakdown in another order
    limit_s = math.inf if beat_s is None else beat_s * (1 + 1e-9) - fixed_s
    drafts = _draft_repeats(plan)
    for count, moe in kinds:
        if count:
            copies = count + drafts if moe is bool(m.moe) else count
            lc = _layer(plan, moe, microbatch, attention, (limit_s - partial_s) / copies * US)
            if lc is None:
                return None
            layers[moe] = lc
            partial_s += copies * lc.time_s
            if partial_s > limit_s:
                return None
    return layers


def _draft_repeats(plan: Plan) -> int:
    """The MTP draft passes a decode step runs on one of its own layers (``_graph``: the model's
    representative layer, where no prompt chunk shares the step); 0 otherwise."""
    d = plan.deployment
    if plan.decodes and d.mtp and d.speculation == "mtp" and not plan.chunk_tokens_per_die:
        return d.mtp
    return 0


def step_cost(plan: Plan, microbatch: bool) -> StepCost:
    """The step of the serial or the two-microbatch graph."""
    extras = _extras(plan)
    graph = _graph(plan, microbatch, None, extras)
    assert graph is not None
    return _step(graph, extras)


# The ops priced once per step outside the layers (head, sampling, MTP projections, the cache load), as
# (breakdown key, µs, speed-of-light µs, speed-of-light s) in the order they enter the breakdown; the
# stack's host overhead last. The same for the serial and the microbatched graph, so priced once for both.
_Extra = tuple[str, float, float, float]


def _extras(plan: Plan) -> tuple[list[_Extra], float]:
    """The step's once-per-step ops priced in breakdown order, and the stack's per-step host overhead (µs)."""
    px = pricer(plan)
    extra: list[tuple[str, Op]] = []
    if plan.decodes:
        mtp = plan.deployment.mtp
        head = head_ops(plan, plan.decode_tokens_per_die)
        if mtp and plan.deployment.speculation == "mtp":
            extra += [("mtp.", op) for op in mtp_extra_ops(_decode_only(plan)) + head] * mtp
        elif mtp and plan.deployment.speculation == "eagle3":
            first, later, draft_head = eagle.draft_plans(plan)
            passes = eagle.pass_ops(first, draft_head)
            wide = passes if later is first else eagle.pass_ops(later, draft_head)  # the top-k candidates'
            extra += [("eagle3.", op) for op in passes + wide * (mtp - 1)]
            extra += [("eagle3.", op) for op in eagle.step_ops(plan, draft_head)]
        extra += [("", op) for op in head]
    else:  # only each prompt's last position needs logits
        extra += [("", op) for op in head_ops(plan, plan.seqs_per_die)]
        if plan.cached_tokens_per_die > 0:
            extra.append(("", cache_load_op(plan)))
    prices: dict[int, Price] = {}  # the MTP passes repeat the same ops: each is priced once
    priced = []
    for prefix, op in extra:
        price = prices.get(id(op))
        if price is None:
            price = prices[id(op)] = px.price(op)
        priced.append((prefix + op.name, price.time_s * US, price.roofline_s * US, price.roofline_s))
    if plan.decodes:  # graph start-ups the host does not hide: device idle, no roofline
        speculative = plan.deployment.mtp > 0 and plan.deployment.speculation != "ngram"
        start_us = graph_launch_s(plan.hardware, plan.deployment.stack, speculative) * US
        if start_us > 0:
            priced.append(("graph_launch", start_us, 0.0, 0.0))
    costs = stack_costs(plan.deployment.stack, plan.hardware.chip.family)
    overhead = costs.step_overhead_us.value if costs is not None else 0.0
    return priced, overhead


def _decode_only(plan: Plan) -> Plan:
    """The MTP draft passes run on the decode tokens only (not on a co-located prompt chunk); with no chunk
    that is the step's own plan."""
    if not plan.chunk_tokens_per_die:
        return plan
    return dataclasses.replace(plan, tokens_per_die=plan.decode_tokens_per_die, chunk_tokens_per_die=0.0)


@dataclass(slots=True)
class _Graph:
    """A graph's step time and breakdown; ``parts`` (breakdown prefix, layer cost, count, binding key) keep
    what its roofline is worked out from, in breakdown order, should it be the graph the step reports."""

    microbatch: bool
    step_s: float
    breakdown_us: dict[str, float]
    representative: LayerCost
    layer_us: dict[str, float]
    parts: list[tuple[str, LayerCost, float, str]]


def _graph(plan: Plan, microbatch: bool, beat_s: float | None, extras: tuple[list[_Extra], float]) -> _Graph | None:
    """The graph's step; with ``beat_s``, None once it is certain to be slower than that; ``extras``: the
    step's once-per-step ops already priced (``_extras``)."""
    m = plan.model
    priced, overhead_us = extras
    fixed_s = 0.0 if beat_s is None else (sum([item[1] for item in priced]) + overhead_us) / US
    layers = _layer_costs(plan, microbatch, beat_s, fixed_s)
    if layers is None:
        return None
    breakdown: dict[str, float] = {}
    layer_us: dict[str, float] = {}
    parts: list[tuple[str, LayerCost, float, str]] = []
    for moe, count, kind in ((False, m.num_dense_layers, "dense"), (True, m.num_moe_layers, "moe")):
        if count:
            lc = layers[moe]
            _add(breakdown, lc.critical_us, count)
            layer_us[kind] = lc.time_s * US
            parts.append(("", lc, count, kind))
    if plan.decodes:
        mtp = plan.deployment.mtp
        if mtp and plan.deployment.speculation == "mtp":
            # n-gram drafting looks the draft up on the host: no draft pass, only the (1 + k)-token verify.
            # k sequential draft passes of the MTP block (a decoder layer + eh_proj + the shared head).
            if plan.chunk_tokens_per_die:
                draft = layer_cost(_decode_only(plan), bool(m.moe), microbatch)
            else:
                draft = layers[bool(m.moe)]
            _add(breakdown, draft.critical_us, mtp, "mtp.")
            parts.append(("mtp.", draft, mtp, "mtp"))
        elif mtp and plan.deployment.speculation == "eagle3":
            first, later, _ = eagle.draft_plans(plan)
            draft = layer_cost(first, False, False)  # a one-layer dense head: no microbatch split
            wide = draft if later is first else layer_cost(later, False, False)  # the top-k candidates' passes
            for cost, count in ((draft, mtp),) if wide is draft else ((draft, 1), (wide, mtp - 1)):
                _add(breakdown, cost.critical_us, count, "eagle3.")
                parts.append(("eagle3.", cost, count, "eagle3" if cost is wide else ""))
    for key, time_us, _, _ in priced:
        breakdown[key] = breakdown.get(key, 0.0) + time_us
    if overhead_us > 0:  # host time the device does not hide
        breakdown["stack_step_overhead"] = breakdown.get("stack_step_overhead", 0.0) + overhead_us
    rep = layers[True] if True in layers else layers[False]
    return _Graph(microbatch, sum(breakdown.values()) / US, breakdown, rep, layer_us, parts)


def _step(graph: _Graph, extras: tuple[list[_Extra], float]) -> StepCost:
    """The step a graph gives, its roofline worked out (in the order its breakdown was summed)."""
    sol: dict[str, float] = {}
    bound_s, binding = 0.0, {}
    for prefix, lc, count, key in graph.parts:
        roofline_us, layer_bound_s, layer_binding = lc.roofline()
        _add(sol, roofline_us, count, prefix)
        bound_s += count * layer_bound_s
        if key:
            binding[key] = layer_binding
    for key, _, sol_us, sol_s in extras[0]:
        sol[key] = sol.get(key, 0.0) + sol_us
        bound_s += sol_s
    rep = graph.representative
    return StepCost(
        step_s=graph.step_s,
        microbatch=graph.microbatch,
        breakdown_us=graph.breakdown_us,
        layer_breakdown_us=rep.critical_us,
        overlapped_us=rep.overlapped_us,
        roofline_us=sol,
        roofline_step_s=bound_s,
        roofline_binding=binding,
        layer_us=graph.layer_us,
    )


def best_step_cost(plan: Plan) -> StepCost:
    """The step at the deployment's microbatch setting; with none set, the faster of the two graphs."""
    choice = plan.deployment.microbatch
    if choice is not None:
        return step_cost(plan, choice)
    extras = _extras(plan)  # the same in both graphs
    serial = _graph(plan, False, None, extras)
    assert serial is not None
    overlapped = _graph(plan, True, serial.step_s, extras)  # stops once its layers alone are slower
    return _step(overlapped if overlapped is not None and overlapped.step_s <= serial.step_s else serial, extras)
