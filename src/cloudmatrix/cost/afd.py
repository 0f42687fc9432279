"""A decode step under attention-FFN disaggregation (AFD): the attention pool runs every layer's attention
(and the dense layers, the router, the head and sampling), the FFN pool runs the routed and shared experts,
and each MoE layer's hidden states cross from the attention dies to the expert dies and back. The ops are
the cost model's own (``cost/layers.py``, ``cost/moe.py``), priced by the one pricer; the crossings are
fused dispatch and combine legs on the plane the two pools span (UB inside a CloudMatrix384 supernode,
NVLink inside an NVL72, RDMA beyond the scale-up domain); the step is the ping-pong schedule of
``cost/afd_pipeline.py`` over ``microbatches`` microbatches. Memory is checked per pool (``cost/afd_memory.py``)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.stacks import stack_costs
from cloudmatrix.cost import comm
from cloudmatrix.cost.afd_pipeline import ATTENTION, FFN, RESOURCE_NAMES, TO_ATTENTION, TO_FFN, Schedule, schedule
from cloudmatrix.cost.kernels import ACT_BYTES, comm_op
from cloudmatrix.cost.layers import attention_ops, ffn_ops, head_ops, mtp_extra_ops
from cloudmatrix.cost.moe import dispatch_message_bytes, expert_work, moe_ffn
from cloudmatrix.cost.ops import Leg, LinkRole, Op, Stream, Transfer
from cloudmatrix.cost.pricing import pricer
from cloudmatrix.deploy import Eplb, Phase, Plan, plan
from cloudmatrix.deployment import AfdDeployment
from cloudmatrix.errors import InfeasibleDeploymentError

US = 1e6
ATTENTION_SIDE = ("ffn_norm", "gate")  # the MoE block's ops the attention dies run (they route the tokens)
CROSSING = ("dispatch", "combine")  # the expert group's own all-to-all, replaced by the pools' crossing


@dataclass(frozen=True, kw_only=True)
class AfdPlans:
    attention: Plan
    ffn: Plan
    microbatches: int

    @property
    def role(self) -> LinkRole:
        """The plane the crossing rides: scale-up when both pools sit in one scale-up domain."""
        return comm.role_for(self.attention.hardware, self.attention.num_dies + self.ffn.num_dies)

    @property
    def group(self) -> int:
        return self.attention.num_dies + self.ffn.num_dies


def afd_plans(afd: AfdDeployment, hw: Hardware, model: ModelSpec) -> AfdPlans:
    """The attention pool as a decode instance of its own dies; the FFN pool as a decode instance whose
    dies take the attention pool's whole batch between them (the tokens its experts see)."""
    a = afd.attention
    if a.phase != Phase.DECODE:
        raise InfeasibleDeploymentError(f"attention-FFN disaggregation runs decode; got phase {a.phase.value}")
    if model.moe is None:
        raise InfeasibleDeploymentError(f"model {model.id} is dense: AFD splits attention from MoE experts")
    if a.ep is not None or a.moe_tp != 1:
        raise InfeasibleDeploymentError(
            f"the attention pool holds no experts: EP {a.ep} / expert TP {a.moe_tp} are the FFN pool's "
            "(--ffn-ep, decode.afd.ffn_ep)"
        )
    if a.offload_gb:
        raise InfeasibleDeploymentError("the attention pool holds no experts to offload: use offload on the FFN pool")
    chips = a.num_chips + afd.ffn_chips
    if chips > hw.system.num_chips:
        raise InfeasibleDeploymentError(
            f"AFD needs {chips} chips ({a.num_chips} attention + {afd.ffn_chips} FFN) but {hw.system.id} has "
            f"{hw.system.num_chips}"
        )
    attn = plan(dataclasses.replace(a, microbatch=False), hw, model)
    sequences = attn.seqs_per_die * attn.num_dies / a.tp  # a TP group's dies share their sequences
    ffn_dep = dataclasses.replace(
        a,
        num_chips=afd.ffn_chips,
        ep=afd.ffn_ep,
        batch_per_chip=sequences / afd.ffn_chips,
        precision=afd.ffn_precision or a.precision,
        activation_precision=a.activation_precision if afd.ffn_precision is None else None,
        tp=1,
        moe_tp=1,
        microbatch=False,
        reserve_gb=a.reserve_gb,
    )
    ffn = plan(ffn_dep, hw, model)
    if (a.batch_per_chip or 0) * a.num_chips / afd.microbatches < 1:
        raise InfeasibleDeploymentError(
            f"{afd.microbatches} microbatches need at least one sequence each; the attention pool holds "
            f"{(a.batch_per_chip or 0) * a.num_chips:g}"
        )
    return AfdPlans(attention=attn, ffn=ffn, microbatches=afd.microbatches)


def crossing_ops(plans: AfdPlans, share: float) -> tuple[Op, Op]:
    """A microbatch's hidden states attention → FFN (at the dispatch format, with its scales) and back
    (BF16). Each crossing is two legs, the attention die's link and the busiest expert die's, on the plane
    the pools span; the slower sets the time (MegaScale-Infer's M2N and N2M, xDeepServe's XCCL)."""
    attn, ffn, role = plans.attention, plans.ffn, plans.role
    m, lay = ffn.model, ffn.layout
    assert m.moe is not None and lay is not None
    plane = comm.plane_for(attn.hardware, plans.group)
    tokens = attn.tokens_per_die * share
    groups = min(lay.routed_dies, m.moe.num_routed)
    dests = comm.messages_per_token(plane, m.moe.num_routed, m.moe.num_routed // groups, groups, m.moe.top_k)
    dests += 1 if lay.shared_dies else 0
    received = expert_work(ffn, ffn.tokens_per_die * share).received
    disp, comb = dispatch_message_bytes(attn, plane), m.hidden * ACT_BYTES
    to_ffn = comm_op(
        "afd_to_ffn",
        Stream.MOE,
        Leg(Transfer.DISPATCH, role, tokens * dests * disp, plans.group),
        Leg(Transfer.DISPATCH, role, received * disp, plans.group),
    )
    to_attention = comm_op(
        "afd_to_attention",
        Stream.MOE,
        Leg(Transfer.COMBINE, role, received * comb, plans.group),
        Leg(Transfer.COMBINE, role, tokens * dests * comb, plans.group),
    )
    return to_ffn, to_attention


def _attention_half(plans: AfdPlans, share: float) -> list[Op]:
    """A MoE layer's attention-pool ops: attention, then the norm and router that pick each token's experts."""
    a = plans.attention
    # the norm and router do not depend on expert placement: priced under uniform load, no routing sampled
    uniform = dataclasses.replace(a, deployment=dataclasses.replace(a.deployment, eplb=Eplb.PERFECT))
    return attention_ops(a, share) + [op for op in moe_ffn(uniform, share) if op.name in ATTENTION_SIDE]


def _ffn_half(plans: AfdPlans, share: float) -> list[Op]:
    """A MoE layer's FFN-pool ops: the experts (and any offloaded weights' stream) without the pool's own
    dispatch and combine, which the crossing replaces."""
    return [op for op in moe_ffn(plans.ffn, share) if op.name not in ATTENTION_SIDE + CROSSING]


@dataclass(frozen=True, kw_only=True)
class AfdStep:
    step_s: float
    schedule: Schedule
    attention_us: dict[str, float]  # µs per step on an attention die, by op (all layers, all microbatches)
    ffn_us: dict[str, float]  # µs per step on an expert die, by op
    crossing_us: dict[str, float]  # µs per step of each crossing (all layers, all microbatches)
    overhead_s: float  # the stack's host time per step, not hidden by the devices

    @property
    def breakdown_us(self) -> dict[str, float]:
        """The attention pool's view of the step: its ops, the time it waits on the experts and the
        crossings, and the host overhead; sums to the step."""
        out = dict(self.attention_us)
        out["afd_wait"] = self.schedule.idle_s(ATTENTION) * US
        if self.overhead_s:
            out["stack_step_overhead"] = self.overhead_s * US
        return out

    def utilisation(self) -> dict[str, float]:
        """Share of the step each resource is busy (the pools and the two directions of the crossing)."""
        return {n: b / self.step_s for n, b in zip(RESOURCE_NAMES, self.schedule.busy_s, strict=True)}


class _Stages:
    """The stage list of one microbatch, with each op's µs added to its pool's tally."""

    def __init__(self, plans: AfdPlans) -> None:
        self.plans = plans
        self.stages: list[tuple[int, float]] = []
        self.tally: dict[int, dict[str, float]] = {r: defaultdict(float) for r in range(len(RESOURCE_NAMES))}

    def add(self, resource: int, ops: list[Op], prefix: str = "") -> None:
        side = self.plans.ffn if resource == FFN else self.plans.attention
        px, seconds = pricer(side), 0.0
        for op in ops:
            t = px.price(op).time_s
            seconds += t
            self.tally[resource][prefix + op.name] += t * US * self.plans.microbatches
        self.stages.append((resource, seconds))


def _moe_layer(s: _Stages, attention: list[Op], ffn: list[Op], crossing: tuple[Op, Op], prefix: str) -> None:
    s.add(ATTENTION, attention, prefix)
    s.add(TO_FFN, [crossing[0]], prefix)
    s.add(FFN, ffn, prefix)
    s.add(TO_ATTENTION, [crossing[1]], prefix)


def afd_step(plans: AfdPlans) -> AfdStep:
    """One decode step (with its MTP draft passes) as the ping-pong schedule of its microbatches."""
    a, m = plans.attention, plans.attention.model
    share = 1.0 / plans.microbatches
    attention, ffn, crossing = _attention_half(plans, share), _ffn_half(plans, share), crossing_ops(plans, share)
    dense = attention_ops(a, share) + ffn_ops(a, False, share)
    s = _Stages(plans)
    for _ in range(m.num_dense_layers):
        s.add(ATTENTION, dense)
    for _ in range(m.num_moe_layers):
        _moe_layer(s, attention, ffn, crossing, "")
    head = head_ops(a, a.decode_tokens_per_die * share)
    s.add(ATTENTION, head)
    d = a.deployment
    if d.mtp and d.speculation == "mtp":  # k sequential draft passes of the MTP block (a MoE layer)
        for _ in range(d.mtp):
            _moe_layer(s, attention + mtp_extra_ops_share(a, share), ffn, crossing, "mtp.")
            s.add(ATTENTION, head, "mtp.")
    sched = schedule(s.stages, plans.microbatches)
    costs = stack_costs(d.stack, a.hardware.chip.family)
    overhead = costs.step_overhead_us.value / US if costs is not None else 0.0
    return AfdStep(
        step_s=sched.makespan_s + overhead,
        schedule=sched,
        attention_us=dict(s.tally[ATTENTION]),
        ffn_us=dict(s.tally[FFN]),
        crossing_us={**s.tally[TO_FFN], **s.tally[TO_ATTENTION]},
        overhead_s=overhead,
    )


def mtp_extra_ops_share(a: Plan, share: float) -> list[Op]:
    """The MTP block's projection for one microbatch (``mtp_extra_ops`` at the microbatch's tokens)."""
    return mtp_extra_ops(dataclasses.replace(a, tokens_per_die=a.tokens_per_die * share))
