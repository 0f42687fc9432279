"""Pricing of op descriptors on one die, in one place (design.md §3 rules 1 and 2):
``time = max(flops / (eff_c · peak · core_share), bytes / (eff_m · bw)) + launches · launch`` for compute
(an attention call's memory term plus the chip's ``attention_floor_us``, its fixed run time beyond its bytes),
the slowest leg of `cost/comm.py`'s formulas for communication, and the roofline (peak compute or peak
bandwidth, no efficiencies, no launch) beside each.

A `Pricer` holds one die's rates as plain floats (per hardware and serving stack, built once) and memoises
the GEMM kernel-curve lookups, so pricing a layer is arithmetic on floats; the same arithmetic prices an op
whose FLOPs and bytes are numpy arrays (many shapes at once), while one estimate stays numpy-free."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from cloudmatrix.catalog.hardware import Hardware, Plane
from cloudmatrix.catalog.kernels import best_share, kernel_curves
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import GraphExecution, overrides_key, stack_costs, stack_graph, stack_kernels
from cloudmatrix.cost import comm
from cloudmatrix.cost.ops import Leg, LinkRole, Op, OpClass, Stream, Transfer
from cloudmatrix.deploy import MoeComm, Plan
from cloudmatrix.units import TERA

_CURVE_MEMO_LIMIT = 4096  # kernel-curve lookups kept per pricer (a long sweep sees many shapes)
# Enum members the hot path compares with, read once: in Python 3.11 reading a member off its class goes
# through the enum metaclass's __getattr__ hook, about 14 times the instructions of reading a global.
_GEMM, _VECTOR, _COMM, _ATTENTION = OpClass.GEMM, OpClass.VECTOR, OpClass.COMM, OpClass.ATTENTION
_BULK, _DISPATCH, _COMBINE, _CACHE_LOAD = Transfer.BULK, Transfer.DISPATCH, Transfer.COMBINE, Transfer.CACHE_LOAD
_SCALE_UP = LinkRole.SCALE_UP
_LINK_NAMES = {role: role.value for role in LinkRole}


def _larger(a: Any, b: Any) -> Any:
    """max() of two floats, or the elementwise maximum where either is an array (numpy loads only then)."""
    if type(a) is float and type(b) is float or isinstance(a, float | int) and isinstance(b, float | int):
        return b if b > a else a
    import numpy as np

    return np.maximum(a, b)


class Price(NamedTuple):
    time_s: float  # calibrated, launches included
    memory_s: float  # calibrated HBM time (both microbatches share HBM)
    roofline_s: float  # speed of light on the whole die
    compute_sol_s: float  # the FLOPs at peak on the op's core share
    memory_sol_s: float  # the HBM bytes at peak bandwidth
    link: str  # COMM: the link whose bytes set the roofline


# A Price from its fields in order, without NamedTuple's keyword-handling constructor (the hot path).
_price: Callable[[tuple[Any, ...]], Price] = partial(tuple.__new__, Price)


class Pricer:
    """One die's rates for a hardware and serving stack, and the prices of ops on it."""

    def __init__(
        self, hardware: Hardware, stack: str | None, kernels: tuple[str, ...] = (), moe_gathered: bool = False
    ) -> None:
        chip = hardware.chip
        e = chip.efficiency
        self.hardware, self.stack, self.kernels = hardware, stack, kernels
        self.moe_gathered = moe_gathered  # the MoE reaches its experts without a dispatch (stack_kernels)
        self.flat = {
            OpClass.GEMM: (e.gemm_compute.value, e.gemm_memory.value),
            OpClass.ATTENTION: (e.attention_compute.value, e.attention_memory.value),
            OpClass.VECTOR: (e.vector_compute.value, e.vector_memory.value),
        }
        self.gemm_serving = e.gemm_serving.value
        # the part of an attention op's shorter term (loads or matmuls) not hidden under the longer one
        self.attention_serial = 1.0 - e.attention_overlap.value if e.attention_overlap is not None else 0.0
        self.hbm_bw = chip.hbm_bw_bytes_per_s_per_die
        self.launch_us = chip.launch_us.value + graph_op_launch_us(hardware, stack) + host_op_us(hardware, stack)
        floor = chip.attention_floor_us  # a decode attention call's fixed run time beyond its bytes
        self.attention_floor_s = floor.value * 1e-6 if floor is not None else 0.0
        self.core_shares = _core_shares(hardware)
        vector = chip.die.vector_tops
        self.vector_peak = vector.value * TERA if vector is not None else None
        self._peaks: dict[str, float] = {}
        self._curves: dict[tuple[str, str, float, float] | tuple[str, str, float, float, str, int], float] = {}

    def peak(self, precision: str) -> float:
        p = self._peaks.get(precision)
        if p is None:
            p = self._peaks[precision] = self.hardware.chip.die.peak_flops(precision)
        return p

    def kernel_share(
        self, fmt: str, kernel: str, rows: float, weights: str = "", split: int = 1, groups: float = 0.0
    ) -> float:
        """Achieved share of peak in serving of the fastest GEMM kernel the stack can run at ``rows`` per
        weight matrix (weights stored in ``weights``, each matrix split ``split`` ways, ``groups`` matrices
        per die for a grouped GEMM), from the measured curves (weight-bound small M included): the chip's
        own, else its sibling's, a library table's times the serving factor (catalog/kernels.py); 0 where
        nothing was measured."""
        key = _curve_key(fmt, kernel, rows, groups, weights, split)
        share = self._curves.get(key)
        if share is None:
            if len(self._curves) >= _CURVE_MEMO_LIMIT:
                self._curves.clear()
            chip = self.hardware.chip
            stored = weights or fmt
            share = 0.0
            for curves_of in (chip.id, chip.curves_chip):  # the chip's own curves, else its sibling's
                kernels = self._kernels(curves_of, fmt, kernel, stored, split)
                share = share or best_share(
                    curves_of, fmt, kernel, kernels, rows, stored, split, groups, chip.id, self.gemm_serving
                )
            self._curves[key] = share
        return share

    def _kernels(self, chip: str, fmt: str, op: str, weights: str, split: int) -> tuple[str, ...]:
        """The kernels the engine picks from: those the deployment ran where one has a curve here, else the
        stack's list for the chip family."""
        if self.kernels and any(
            c.kernel in self.kernels for c in kernel_curves(chip, fmt, op, self.kernels, weights, split)
        ):
            return self.kernels
        return stack_kernels(self.stack, self.hardware.chip.family, op, self.moe_gathered)

    def attention_share(self, fmt: str, kv_len: float) -> float:
        """Achieved share of peak of the fused attention kernel the deployment or stack names (stacks.yaml
        ``kernels: {attention: ...}``) at ``kv_len`` keys per query row, from its measured curve (the chip's
        own, else its sibling's); 0 where none is named or measured (the chip's flat attention value)."""
        key = _curve_key(fmt, "attention", kv_len, 0.0, "", 1)
        share = self._curves.get(key)
        if share is None:
            if len(self._curves) >= _CURVE_MEMO_LIMIT:
                self._curves.clear()
            chip, share = self.hardware.chip, 0.0
            for curves_of in (chip.id, chip.curves_chip):
                named = self._kernels(curves_of, fmt, "attention", fmt, 1)
                found = [c for c in kernel_curves(curves_of, fmt, "attention", named) if c.kernel in named]
                share = share or max((c.share_on(chip.id, kv_len) for c in found), default=0.0)
            self._curves[key] = share
        return share

    def gemm_share(self, op: Op) -> float:
        """The kernel curve's share in serving for a GEMM op (memoised), 0 where none was measured for its
        formats."""
        if not op.kernel:
            return 0.0
        memo = self._curves.get(_curve_key(op.precision, op.kernel, op.rows, op.groups, op.weights, op.split))
        if memo is not None:  # 0.0 is a memoised "nothing measured", not a miss
            return memo
        return self.kernel_share(op.precision, op.kernel, op.rows, op.weights, op.split, op.groups)

    def compute_efficiency(self, op: Op) -> float:
        """A GEMM's share of peak at its shape: the kernel curve where one was measured for its formats
        (weights stored narrower than the compute format need a curve measured so: W4A16 on Hopper has
        one, W4A8 none), else the flat value, in serving (a library table's share and the flat value times
        the sustained serving factor, an engine-measured table's as measured); a fused attention op the
        stack names a measured kernel for takes its curve, other attention and vector ops the chip's flat
        values."""
        flat = self.flat[op.op_class][0]
        if op.op_class is _ATTENTION and op.kernel:
            return self.attention_share(op.precision, op.rows) or flat
        if op.op_class is not _GEMM:
            return flat
        return self.gemm_share(op) or flat * self.gemm_serving

    def price(self, op: Op, core_share: float = 1.0) -> Price:
        """The op's price on ``core_share`` of the die's cores. An op whose FLOPs and bytes are arrays
        (many shapes of one op) is priced elementwise by the same arithmetic."""
        op_class = op.op_class
        if op_class is _COMM:
            t, sol, link = self.comm(op.legs)
            return _price((t + op.launches * self.launch_us * 1e-6, 0.0, sol, 0.0, 0.0, link))
        precision = op.precision
        eff_c, eff_m = self.flat[op_class]
        peak = self._peaks.get(precision) or self.peak(precision)
        if op_class is _VECTOR:
            if self.vector_peak is not None:
                peak = self.vector_peak  # separate vector engines, not the matrix engines' peak
        elif op_class is _GEMM:  # compute_efficiency, inlined: this is the hot path
            share = 0.0
            if op.kernel and op.split == 1 and op.weights == precision:  # the common GEMM: a short memo key
                memo = self._curves.get((precision, op.kernel, op.rows, op.groups))
                # 0.0 is a memoised "nothing measured", not a miss
                share = memo if memo is not None else self.kernel_share(precision, op.kernel, op.rows, groups=op.groups)
            elif op.kernel:
                share = self.gemm_share(op)
            eff_c = share or eff_c * self.gemm_serving
        elif op.kernel:  # a fused attention op priced by the kernel the stack names, where measured
            eff_c = self.attention_share(precision, op.rows) or eff_c
        flops = op.flops
        nbytes = op.hbm_bytes
        bw = self.hbm_bw
        compute = flops / (eff_c * peak * core_share)
        memory = nbytes / (eff_m * bw)
        sol_m = nbytes / bw
        sol = flops / peak
        launch = op.launches * self.launch_us * 1e-6
        # an attention call runs a fixed time beyond its bytes (none where its compute binds)
        floored = memory + self.attention_floor_s if op_class is _ATTENTION else memory
        if type(compute) is float and type(memory) is float:  # then so are sol and sol_m: one estimate
            longer = floored if floored > compute else compute
            roofline = sol_m if sol_m > sol else sol
        else:  # arrays
            longer, roofline = _larger(compute, floored), _larger(sol, sol_m)
        time = longer + launch
        if op_class is _ATTENTION and self.attention_serial:
            time = time + self.attention_serial * (compute + memory - _larger(compute, memory))
        return _price((time, memory, roofline, flops / (peak * core_share), sol_m, ""))

    def comm(self, legs: tuple[Leg, ...]) -> tuple[float, float, str]:
        """(time, roofline, binding link) of parallel legs: the slowest leg sets each."""
        if len(legs) == 1:
            leg = legs[0]
            t, s = self._leg(leg)
            return t, s, _LINK_NAMES[leg.role]
        time = sol = 0.0
        link = ""
        for leg in legs:
            t, s = self._leg(leg)
            time = _larger(time, t)
            if not link or s > sol:
                sol, link = s, _LINK_NAMES[leg.role]
        return time, sol, link

    def _leg(self, leg: Leg) -> tuple[float, float]:
        transfer = leg.transfer
        if transfer is _BULK:
            return comm.bulk_s(self._plane(leg.role), leg.bytes, leg.peers, leg.local)
        if transfer is _DISPATCH or transfer is _COMBINE:  # a StrEnum member is its value: "dispatch", ...
            return comm.ep_fused_s(self._plane(leg.role), transfer, leg.bytes, leg.peers)
        if transfer is _CACHE_LOAD:
            return comm.cache_load_s(self.hardware, "ub" if leg.role is _SCALE_UP else "vpc", leg.bytes)
        return comm.cpu_link_s(self.hardware, leg.bytes)

    def _plane(self, role: LinkRole) -> Plane:
        planes = self.hardware.system.planes
        return planes.scale_up if role is _SCALE_UP else planes.scale_out


def _curve_key(
    fmt: str, kernel: str, rows: float, groups: float, weights: str, split: int
) -> tuple[str, str, float, float] | tuple[str, str, float, float, str, int]:
    """The memo key of a curve lookup: short for the common GEMM (weights in the compute format, unsplit)."""
    if (not weights or weights == fmt) and split == 1:
        return (fmt, kernel, rows, groups)
    return (fmt, kernel, rows, groups, weights, split)


def _core_shares(hardware: Hardware) -> dict[tuple[Stream, bool], float]:
    """Fraction of the die's cores each stream owns in the split-core decode pipeline (P3 §4.2.3), for its
    cube ops and (where the die has separate vector units) its vector ops: keyed by (stream, vector op)."""
    mb, die = hardware.chip.microbatch, hardware.chip.die
    out = {}
    for stream, share in ((Stream.ATTENTION, mb.attention), (Stream.MOE, mb.moe)):
        if share is None:  # alternating chips split no cores
            continue
        cube = share.compute / die.compute_units.value
        out[stream, False] = cube
        out[stream, True] = share.vector / die.vector_units.value if die.vector_units else cube
    return out


def graph_op_launch_us(hardware: Hardware, stack: str | None) -> float:
    """The stack's fixed cost per op of its captured graph beyond the chip's ``launch_us``: its ``graph``
    section's on a chip whose graph launches have a start-up (Ascend; fitted where stated, else the prior from
    the chip's cost per captured task), plus its chip family entry's own (``op_launch_us``: SGLang's HIP graphs
    on CDNA, fitted; where no fit is stated, as in a hold-out without its rows, the prior from the entry's
    ``tasks_per_op``); 0 where none is stated."""
    graph = stack_graph(stack)
    own = 0.0
    if graph is not None and hardware.chip.graph_launch_us is not None:
        own = graph.op_launch_us.value if graph.op_launch_us is not None else graph_task_prior_us(hardware, graph)
    costs = stack_costs(stack, hardware.chip.family)
    if costs is not None and costs.op_launch_us is not None:
        own += costs.op_launch_us.value
    elif costs is not None and costs.tasks_per_op is not None:
        own += graph_node_prior_us(hardware, costs.tasks_per_op)
    return own


def host_op_us(hardware: Hardware, stack: str | None) -> float:
    """The stack's host time per op launch of a step on the chip's family: ``step_op_us``, plus
    ``step_kernels`` of the chip's ``graph_task_us`` (0 where unset)."""
    costs = stack_costs(stack, hardware.chip.family)
    if costs is None:
        return 0.0
    own = costs.step_op_us.value if costs.step_op_us is not None else 0.0
    if costs.step_kernels is not None:
        own += task_prior_us(hardware, costs.step_kernels)
    return own


def graph_task_prior_us(hardware: Hardware, graph: GraphExecution) -> float:
    """The cost per op a graph captured op by op pays from the runtime alone, fitted on no row: the engine's
    tasks per op of the twin times the chip's fixed cost per captured task plus a near-empty task's run time
    (0 where the chip states none)."""
    return graph_node_prior_us(hardware, graph.tasks_per_op)


def graph_node_prior_us(hardware: Hardware, tasks_per_op: Sourced) -> float:
    """``tasks_per_op`` captured nodes beyond an op's first, each at the chip's cost per node
    (``graph_task_us``) plus the run time of a kernel with next to no work (``kernel_floor_us``; 0 where
    unset): the auxiliary kernels of an op captured one by one, whose bytes the twin does not price."""
    floor = hardware.chip.kernel_floor_us
    per_node = 0.0 if floor is None or hardware.chip.graph_task_us is None else floor.value
    return task_prior_us(hardware, tasks_per_op) + tasks_per_op.value * per_node


def task_prior_us(hardware: Hardware, tasks_per_op: Sourced) -> float:
    """``tasks_per_op`` times the chip's fixed device cost per captured task or graph node (``graph_task_us``;
    0 where the chip states none): the runtime's prior for a cost per op, fitted on no row."""
    task = hardware.chip.graph_task_us
    return 0.0 if task is None else tasks_per_op.value * task.value


def graph_launch_s(hardware: Hardware, stack: str | None, speculative: bool) -> float:
    """Start-up of the step's graph launches that the stack's host does not hide (Ascend: P3 §4.2.4's
    0.6-0.8 ms per graph dispatch, times the launches per step the stack exposes)."""
    graph, start = stack_graph(stack), hardware.chip.graph_launch_us
    if graph is None or start is None:
        return 0.0
    return graph.exposed_launches(speculative) * start.value * 1e-6


_PRICERS: dict[tuple[int, str | None, tuple[str, ...], bool, tuple[Any, ...]], Pricer] = {}


def pricer(plan: Plan) -> Pricer:
    """The pricer of a plan's hardware, stack, named kernels and MoE layout (with or without a dispatch: the
    stack's grouped kernels may differ), built once per such key and per set of stack overrides in force (a
    hold-out refit of a stack's graph cost per op changes its launch time). The plan keeps the one it was
    given, with the overrides it was found under: a step asks about seven times."""
    overrides = overrides_key()
    kept = plan.__dict__.get(_KEPT)  # a frozen dataclass's __dict__, as deploy's derived figures use
    if kept is not None and kept[0] is overrides:
        return kept[1]
    hw, stack, kernels = plan.hardware, plan.deployment.stack, plan.deployment.kernels
    gathered = moe_gathered(plan)
    key = (id(hw), stack, kernels, gathered, overrides)
    p = _PRICERS.get(key)
    if p is None or p.hardware is not hw:  # the entry holds its hardware, so an id is never reused under it
        if len(_PRICERS) >= 64:
            _PRICERS.clear()
        p = _PRICERS[key] = Pricer(hw, stack, kernels, gathered)
    plan.__dict__[_KEPT] = (overrides, p)
    return p


_KEPT = "_pricer"  # the key in a plan's __dict__ under which ``pricer`` keeps its answer


def moe_gathered(plan: Plan) -> bool:
    """A MoE model whose tokens reach the experts without an all-to-all dispatch (TP experts, or every
    expert on the die): the layout a stack's ``grouped_gathered`` kernels serve."""
    return plan.model.moe is not None and plan.moe_comm is not MoeComm.DISPATCH


def op_time_s(op: Op, plan: Plan, core_share: float = 1.0) -> float:
    """Calibrated time of one op on one die, launch overhead included."""
    return pricer(plan).price(op, core_share).time_s


def roofline_s(op: Op, plan: Plan) -> float:
    """Speed of light: peak compute or peak bandwidth, whichever binds, no overheads."""
    return pricer(plan).price(op).roofline_s
