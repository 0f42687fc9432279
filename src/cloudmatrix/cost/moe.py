"""The MoE feed-forward of one layer on the busiest expert die: gate, dispatch, the experts the batch
activates, SwiGLU and combine (fused AIV-Direct / DeepEP low-latency in decode, bulk all-to-all in
prefill), and the expert-load helpers it rests on (docs/model.md §3.2, §3.4, §5)."""

from __future__ import annotations

from typing import NamedTuple

from cloudmatrix.catalog.hardware import Plane
from cloudmatrix.cost import comm
from cloudmatrix.cost.expert_load import busiest_factor
from cloudmatrix.cost.kernels import ACT_BYTES, comm_op, gemm_op, norm_op, swiglu_op, tp_collective
from cloudmatrix.cost.ops import Leg, LinkRole, Op, OpClass, Stream, Transfer, new_op
from cloudmatrix.deploy import Eplb, MoeComm, Plan
from cloudmatrix.units import GB_DECIMAL

# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_GEMM, _VECTOR = OpClass.GEMM, OpClass.VECTOR
_MOE_STREAM = Stream.MOE
_BULK, _DISPATCH, _COMBINE, _CPU_STREAM = Transfer.BULK, Transfer.DISPATCH, Transfer.COMBINE, Transfer.CPU_STREAM
_SCALE_UP, _SCALE_OUT, _CPU = LinkRole.SCALE_UP, LinkRole.SCALE_OUT, LinkRole.CPU
_MOE_ALL_REDUCE, _MOE_ALL_GATHER, _MOE_DISPATCH, _MOE_LOCAL = (
    MoeComm.ALL_REDUCE,
    MoeComm.ALL_GATHER,
    MoeComm.DISPATCH,
    MoeComm.LOCAL,
)
_PERFECT = Eplb.PERFECT


def _requests(plan: Plan, tokens: float) -> float:
    """Requests behind ``tokens`` of one die's step: decode sequences (plus prompts being chunked), or the
    prompts a prefill batch packs."""
    input_len = plan.deployment.input_len
    if not plan.decodes:
        return tokens / input_len
    if plan.tokens_per_die <= 0:
        return 0.0
    return tokens * (plan.seqs_per_die + plan.chunk_tokens_per_die / input_len) / plan.tokens_per_die


def expert_imbalance(plan: Plan, tokens: float) -> float:
    """Busiest routed die's load over the mean for a step of ``tokens`` per die (1: perfect EPLB, or no MoE)."""
    m, lay = plan.model, plan.layout
    if plan.deployment.eplb == _PERFECT or m.moe is None or lay is None:
        return 1.0
    return busiest_factor(
        plan.routing,
        lay,
        plan.deployment.eplb,
        num_experts=m.moe.num_routed,
        top_k=m.moe.top_k,
        tokens=tokens * _group_scale(plan),
        requests=_requests(plan, tokens) * _group_scale(plan),
    )


def _group_scale(plan: Plan) -> float:
    """Distinct tokens entering one expert group per token of a die's step: the group's dies bring their
    own tokens, except that the dies of one attention TP group bring the same ones."""
    return plan.moe_group / plan.tp


def active_fraction(num_experts: int, top_k: int, tokens: float) -> float:
    """Expected share of experts that receive at least one of ``tokens`` routed tokens (each picks top_k
    distinct experts, uniformly): 1 - (1 - k/E)^T. Only those experts' weights are read in a step."""
    if tokens <= 0:
        return 0.0
    return 1.0 - (1.0 - top_k / num_experts) ** tokens


class ExpertWork(NamedTuple):
    """What the busiest expert die computes in one step: full-width token rows through its routed experts
    (``routed``), the expert slots whose weights it reads (``slots``), the rows it receives over the fabric,
    and the shared experts' rows and the fraction of their width it holds. A named tuple made with positional
    fields: a frozen dataclass sets each field through ``object.__setattr__``, and a class called with
    keywords costs about twice as much in Python 3.11 (``cost.ops.new_op``)."""

    routed: float
    slots: float
    received: float
    shared: float
    shared_width: float


def expert_work(plan: Plan, tokens: float) -> ExpertWork:
    """A small batch touches few experts: the die reads only the active ones (the shared expert always
    runs). With expert TP each die of an EP rank computes all the rank's rows at 1/moe_tp of the width."""
    m, lay = plan.model, plan.layout
    assert m.moe is not None and lay is not None
    group_tokens = tokens * _group_scale(plan)
    per_rank_mean = group_tokens * m.moe.top_k / lay.routed_slots * lay.routed_slots_per_die
    busiest = per_rank_mean * expert_imbalance(plan, tokens)
    active = lay.routed_slots_per_die * active_fraction(m.moe.num_routed, m.moe.top_k, group_tokens)
    if lay.shared_dies:  # shared experts on their own dies: the busier kind of die sets the time
        shared_rows = group_tokens / lay.shared_dies
        if shared_rows * m.moe.num_shared > busiest:
            return ExpertWork(0.0, 0.0, shared_rows, shared_rows, 1.0)  # routed, slots, received, shared, width
        return ExpertWork(busiest, active, busiest, 0.0, 1.0)
    if plan.moe_comm in (_MOE_ALL_REDUCE, _MOE_ALL_GATHER):  # shared experts split over the group
        return ExpertWork(busiest, active, busiest, group_tokens, 1 / plan.moe_group)
    # shared experts are local: every token also runs through them on its own die
    return ExpertWork(busiest, active, busiest, tokens, 1.0)


def dispatch_message_bytes(plan: Plan, plane: Plane) -> float:
    """One token's dispatch payload: hidden state at the dispatch precision, plus its quantisation scales."""
    h = plan.model.hidden
    if plan.dispatch_bytes >= ACT_BYTES or plane.ep_comm is None:
        return h * plan.dispatch_bytes
    return h * plan.dispatch_bytes + plane.ep_comm.scale_bytes_per_token.value


def _bulk_all_to_all(plan: Plan, tokens: float, messages: float, msg_bytes: float) -> tuple[Leg, ...]:
    """Bulk MoE all-to-all of ``messages`` per die. Inside one scale-up domain it is a single collective.
    Beyond it, tokens cross the scale-out plane once per remote domain they have experts in (hypergeometric
    over domains; DeepSeek's group-limited routing would cap this further) and are forwarded to their dies
    over scale-up (DeepEP's NVLink forwarding): two legs, the slower of which sets the time."""
    hw, lay, moe = plan.hardware, plan.layout, plan.model.moe
    assert lay is not None and moe is not None
    domain = hw.scale_up_domain_dies
    if lay.ep <= domain:
        return (Leg(_BULK, _SCALE_UP, messages * msg_bytes, lay.ep - 1, lay.ep <= hw.dies_per_node),)
    domains = lay.ep // domain
    remote = comm.distinct_destinations(moe.num_routed, moe.num_routed // domains, domains, moe.top_k)
    remote *= (domains - 1) / domains
    return (
        Leg(_BULK, _SCALE_OUT, tokens * remote * msg_bytes, domains - 1, local=False),
        Leg(_BULK, _SCALE_UP, messages * msg_bytes, domain - 1, local=True),
    )


def _experts_op(plan: Plan, work: ExpertWork) -> list[Op]:
    """The grouped expert GEMMs (routed at 1/moe_tp of their width, shared at their share) and SwiGLU."""
    m, h = plan.model, plan.model.hidden
    assert m.moe is not None
    routed_w = 1 / plan.deployment.moe_tp
    shared_w = work.shared_width * m.moe.num_shared if work.shared > 0 else 0.0
    rows = work.routed * routed_w + work.shared * shared_w  # full-width-equivalent rows
    tokens_in = work.routed + work.shared * (1 if m.moe.num_shared else 0)
    expert_io = tokens_in * (h * plan.dispatch_bytes + h * ACT_BYTES) + 3 * rows * m.moe.intermediate * ACT_BYTES
    # the grouped kernel's M: token rows per expert whose weights are read
    per_expert = rows / max(work.slots * routed_w + shared_w, 1e-9)
    experts = new_op(
        "experts",
        _GEMM,
        _MOE_STREAM,
        2.0 * rows * m.expert_params(),  # FLOPs
        (work.slots * routed_w + shared_w) * m.expert_params() * plan.weight_bytes + expert_io,  # HBM bytes
        plan.compute_precision,
        "grouped",  # kernel
        per_expert,  # rows
        plan.deployment.precision,  # weights
        plan.deployment.moe_tp,  # split
        work.slots + (1.0 if shared_w else 0.0),  # groups
    )
    return [experts, swiglu_op(_MOE_STREAM, rows, m.moe.intermediate, plan)]


def _gathered_comm(plan: Plan, tokens: float) -> tuple[list[Op], list[Op]]:
    """All-reduce MoE (the attention TP group is the expert group: every die holds every token, the
    partial outputs are summed) or all-gather MoE (TP experts under DP attention: the group's tokens are
    gathered, the outputs reduce-scattered back)."""
    h, g = plan.model.hidden, plan.moe_group
    if plan.moe_comm == _MOE_ALL_REDUCE:
        return [], tp_collective(plan, "all_reduce", g, tokens * h * ACT_BYTES, _MOE_STREAM, "moe_all_reduce")
    group_tokens = tokens * g  # tp == 1 here: each die brings its own tokens
    gather = tp_collective(plan, "all_gather", g, group_tokens * h * plan.dispatch_bytes, _MOE_STREAM, "moe_all_gather")
    scatter = tp_collective(plan, "reduce_scatter", g, group_tokens * h * ACT_BYTES, _MOE_STREAM, "moe_reduce_scatter")
    return gather, scatter


def _dispatch_comm(plan: Plan, tokens: float, work: ExpertWork) -> tuple[list[Op], list[Op]]:
    """Expert parallelism: the all-to-all dispatch and combine (fused in decode, bulk in prefill)."""
    m, h, lay = plan.model, plan.model.hidden, plan.layout
    assert m.moe is not None and lay is not None
    k, s = m.moe.top_k, _MOE_STREAM
    plane, role = comm.plane_and_role(plan.hardware, lay.ep)
    disp_msg = dispatch_message_bytes(plan, plane)
    comb_msg = h * ACT_BYTES
    # Redundant copies add no destinations: a token reaches one copy of each chosen expert.
    groups = min(lay.routed_dies, m.moe.num_routed)
    dests = comm.messages_per_token(plane, m.moe.num_routed, m.moe.num_routed // groups, groups, k) + (
        1 if lay.shared_dies else 0
    )
    before: list[Op] = []
    after: list[Op] = []
    moved = max(tokens * dests, work.received) * (lay.ep - 1) / lay.ep  # messages to the die itself stay local
    if plan.decodes:  # fused AIV-Direct operators (P3 §4.2.1): the busiest link sends or receives the most
        d_legs: tuple[Leg, ...] = (Leg(_DISPATCH, role, moved * disp_msg, lay.ep),)
        c_legs: tuple[Leg, ...] = (Leg(_COMBINE, role, moved * comb_msg, lay.ep),)
    else:  # prefill: the bulk all-to-all (SDMA on Ascend, P3 §4.3; DeepEP normal kernels on NVIDIA)
        d_legs = _bulk_all_to_all(plan, tokens, moved, disp_msg)
        c_legs = _bulk_all_to_all(plan, tokens, moved, comb_msg)
        before = [
            new_op("dispatch_compute", _VECTOR, s, tokens * h * 4, tokens * h * ACT_BYTES + 2 * tokens * k * disp_msg)
        ]
        after = [
            new_op("combine_compute", _VECTOR, s, tokens * k * h * 2, tokens * k * comb_msg + tokens * h * ACT_BYTES)
        ]
    return [*before, comm_op("dispatch", s, *d_legs)], [comm_op("combine", s, *c_legs), *after]


def moe_ffn(plan: Plan, share: float) -> list[Op]:
    m, h = plan.model, plan.model.hidden
    assert m.moe is not None
    tokens = plan.tokens_per_die * share
    work = expert_work(plan, tokens)
    norm = norm_op("ffn_norm", _MOE_STREAM, tokens, plan)
    gate = gemm_op("gate", _MOE_STREAM, tokens, m.router_params(), plan, tokens * h * ACT_BYTES, precision="bf16")
    before: list[Op] = []  # one die holding every expert sends nothing
    after: list[Op] = []
    if plan.moe_comm == _MOE_DISPATCH:
        before, after = _dispatch_comm(plan, tokens, work)
    elif plan.moe_comm != _MOE_LOCAL:
        before, after = _gathered_comm(plan, tokens)
    return [norm, gate, *before, *_offload_stream(plan, work), *_experts_op(plan, work), *after]


def _offload_stream(plan: Plan, work: ExpertWork) -> list[Op]:
    """Offloaded expert weights (``offload_gb`` per die, spread over the MoE layers) that the step's active
    experts need, streamed from CPU memory over the accelerator's CPU link (NVLink-C2C on GB200, UB on the
    CloudMatrix384, PCIe on HGX), at the link's efficiency, on the MoE stream before the experts run."""
    d, m, lay = plan.deployment, plan.model, plan.layout
    if not d.offload_gb or lay is None or m.moe is None:
        return []
    active = min(work.slots / max(lay.routed_slots_per_die, 1), 1.0)
    moved = d.offload_gb * GB_DECIMAL / m.num_moe_layers * active
    return [comm_op("expert_offload_stream", _MOE_STREAM, Leg(_CPU_STREAM, _CPU, moved))]
