"""The MoE feed-forward of one layer on the busiest expert die: gate, dispatch, the experts the batch
activates, SwiGLU and combine (fused AIV-Direct / DeepEP low-latency in decode, bulk all-to-all in
prefill), and the expert-load helpers it rests on (docs/model.md §3.2, §3.4, §5)."""

from __future__ import annotations

from cloudmatrix.catalog.hardware import Plane
from cloudmatrix.cost import comm
from cloudmatrix.cost.kernels import ACT_BYTES, gemm_op, norm_op, swiglu_op
from cloudmatrix.cost.ops import Op, OpClass, Stream
from cloudmatrix.deploy import Eplb, Plan


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
    if plan.deployment.eplb == Eplb.PERFECT or m.moe is None or lay is None:
        return 1.0
    from cloudmatrix.cost.experts import busiest_factor  # numpy loads only when routing is sampled

    return busiest_factor(
        plan.routing,
        lay,
        plan.deployment.eplb,
        num_experts=m.moe.num_routed,
        top_k=m.moe.top_k,
        tokens=tokens * lay.ep,
        requests=_requests(plan, tokens) * lay.ep,
    )


def active_fraction(num_experts: int, top_k: int, tokens: float) -> float:
    """Expected share of experts that receive at least one of ``tokens`` routed tokens (each picks top_k
    distinct experts, uniformly): 1 - (1 - k/E)^T. Only those experts' weights are read in a step."""
    if tokens <= 0:
        return 0.0
    return 1.0 - (1.0 - top_k / num_experts) ** tokens


def _expert_tokens(plan: Plan, tokens: float) -> tuple[float, float, float]:
    """(tokens on the busiest expert die, expert slots whose weights it reads, tokens it receives over the
    fabric). A small batch touches few experts: the die reads only the active ones (the shared expert
    always runs)."""
    m, lay = plan.model, plan.layout
    assert m.moe is not None and lay is not None
    routed_total = tokens * lay.ep * m.moe.top_k  # routed (token, expert) pairs in the EP group
    per_die_mean = routed_total / lay.routed_slots * lay.routed_slots_per_die
    busiest = per_die_mean * expert_imbalance(plan, tokens)
    active = lay.routed_slots_per_die * active_fraction(m.moe.num_routed, m.moe.top_k, tokens * lay.ep)
    routed = (busiest, active, busiest)
    if lay.shared_dies:
        shared_tokens = tokens * lay.ep / lay.shared_dies
        return max(routed, (shared_tokens, 1.0, shared_tokens))
    # shared experts are local: every token also runs through them on its own die
    local = tokens * m.moe.num_shared
    return busiest + local, routed[1] + m.moe.num_shared, busiest


def dispatch_message_bytes(plan: Plan, plane: Plane) -> float:
    """One token's dispatch payload: hidden state at the dispatch precision, plus its quantisation scales."""
    h = plan.model.hidden
    if plan.dispatch_bytes >= ACT_BYTES or plane.ep_comm is None:
        return h * plan.dispatch_bytes
    return h * plan.dispatch_bytes + plane.ep_comm.scale_bytes_per_token.value


def _bulk_all_to_all(plan: Plan, tokens: float, messages: float, msg_bytes: float) -> tuple[float, float]:
    """Bulk MoE all-to-all of ``messages`` per die. Inside one scale-up domain it is a single collective.
    Beyond it, tokens cross the scale-out plane once per remote domain they have experts in (hypergeometric
    over domains; DeepSeek's group-limited routing would cap this further) and are forwarded to their dies
    over scale-up (DeepEP's NVLink forwarding); the slower of the two legs sets the time. Returns (time,
    roofline)."""
    hw, lay, moe = plan.hardware, plan.layout, plan.model.moe
    assert lay is not None and moe is not None
    planes, domain = hw.system.planes, hw.scale_up_domain_dies
    if lay.ep <= domain:
        return comm.bulk_s(planes.scale_up, messages * msg_bytes, lay.ep - 1, lay.ep <= hw.dies_per_node)
    domains = lay.ep // domain
    remote = comm.distinct_destinations(moe.num_routed, moe.num_routed // domains, domains, moe.top_k)
    remote *= (domains - 1) / domains
    out_t, out_sol = comm.bulk_s(planes.scale_out, tokens * remote * msg_bytes, domains - 1, local=False)
    in_t, in_sol = comm.bulk_s(planes.scale_up, messages * msg_bytes, domain - 1, local=True)
    return max(out_t, in_t), max(out_sol, in_sol)


def moe_ffn(plan: Plan, share: float) -> list[Op]:
    m, h, lay = plan.model, plan.model.hidden, plan.layout
    assert m.moe is not None and lay is not None
    tokens = plan.tokens_per_die * share
    k = m.moe.top_k
    s = Stream.MOE
    busiest, slots, received = _expert_tokens(plan, tokens)
    plane = comm.plane_for(plan.hardware, lay.ep)
    disp_msg = dispatch_message_bytes(plan, plane)
    comb_msg = h * ACT_BYTES
    # Redundant copies add no destinations: a token reaches one copy of each chosen expert.
    groups = min(lay.routed_dies, m.moe.num_routed)
    dests = comm.messages_per_token(plane, m.moe.num_routed, m.moe.num_routed // groups, groups, k) + (
        1 if lay.shared_dies else 0
    )
    gate = gemm_op("gate", s, tokens, m.router_params(), plan, tokens * h * ACT_BYTES, precision="bf16")
    norm = norm_op("ffn_norm", s, tokens, plan)
    swiglu = swiglu_op(s, busiest, m.moe.intermediate, plan)
    expert_io = busiest * (h * plan.dispatch_bytes + h * ACT_BYTES + 3 * m.moe.intermediate * ACT_BYTES)
    experts = Op(
        name="experts",
        op_class=OpClass.GEMM,
        stream=s,
        flops=2.0 * busiest * m.expert_params(),
        hbm_bytes=slots * m.expert_params() * plan.weight_bytes + expert_io,
        precision=plan.deployment.precision,
    )
    before: list[Op] = []
    after: list[Op] = []
    if lay.ep == 1:  # one rank holds every expert: nothing is sent
        d_t = d_sol = c_t = c_sol = 0.0
    elif plan.decodes:
        # Fused AIV-Direct operators (P3 §4.2.1): the busiest link sends or receives the most messages.
        remote = (lay.ep - 1) / lay.ep  # messages to the die itself stay local
        moved = max(tokens * dests, received) * remote
        d_t, d_sol = comm.ep_fused_s(plane, "dispatch", moved * disp_msg, lay.ep)
        c_t, c_sol = comm.ep_fused_s(plane, "combine", moved * comb_msg, lay.ep)
    else:
        # Prefill: the bulk all-to-all (SDMA on Ascend, P3 §4.3; DeepEP normal kernels on NVIDIA).
        moved = max(tokens * dests, received) * (lay.ep - 1) / lay.ep
        d_t, d_sol = _bulk_all_to_all(plan, tokens, moved, disp_msg)
        c_t, c_sol = _bulk_all_to_all(plan, tokens, moved, comb_msg)
        before = [
            Op(
                name="dispatch_compute",
                op_class=OpClass.VECTOR,
                stream=s,
                flops=tokens * h * 4,
                hbm_bytes=tokens * h * ACT_BYTES + 2 * tokens * k * disp_msg,
            )
        ]
        after = [
            Op(
                name="combine_compute",
                op_class=OpClass.VECTOR,
                stream=s,
                flops=tokens * k * h * 2,
                hbm_bytes=tokens * k * comb_msg + tokens * h * ACT_BYTES,
            )
        ]
    if lay.ep == 1:
        return [norm, gate, experts, swiglu]
    dispatch = Op(name="dispatch", op_class=OpClass.COMM, stream=s, comm_s=d_t, comm_roofline_s=d_sol)
    combine = Op(name="combine", op_class=OpClass.COMM, stream=s, comm_s=c_t, comm_roofline_s=c_sol)
    return [norm, gate, *before, dispatch, experts, swiglu, combine, *after]
