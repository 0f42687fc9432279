"""Per-die HBM use (design.md §3 rule 6): weights + KV + buffers must fit, or the deployment is
infeasible with the numbers stated."""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.catalog.eagle import eagle3_head
from cloudmatrix.catalog.stacks import StackProfile, load_stack
from cloudmatrix.cost.comm import plane_for
from cloudmatrix.cost.context_parallel import gathered_kv_bytes, kv_per_die_bytes
from cloudmatrix.cost.kernels import ACT_BYTES
from cloudmatrix.cost.moe import dispatch_message_bytes
from cloudmatrix.deploy import BYTES_PER_ELEMENT, MoeComm, Phase, Plan
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.frozen import fill_dict_init
from cloudmatrix.units import GB_DECIMAL

# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_PREFILL, _ALL_REDUCE, _ALL_GATHER, _DISPATCH = Phase.PREFILL, MoeComm.ALL_REDUCE, MoeComm.ALL_GATHER, MoeComm.DISPATCH

GB = GB_DECIMAL


@fill_dict_init
@dataclass(frozen=True, kw_only=True)
class MemoryUse:
    weights_bytes: float
    kv_bytes: float
    buffers_bytes: float
    reserve_bytes: float
    capacity_bytes: float
    max_seqs_per_die: float  # decode: sequences whose KV fits beside the weights and buffers
    max_batch_per_chip: float  # the same as a per-chip batch (a TP group's dies share their sequences)

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_bytes + self.buffers_bytes + self.reserve_bytes

    def as_gb(self) -> dict[str, float]:
        return {
            "weights": self.weights_bytes / GB,
            "kv": self.kv_bytes / GB,
            "buffers": self.buffers_bytes / GB,
            "reserve": self.reserve_bytes / GB,
            "total": self.total_bytes / GB,
            "capacity": self.capacity_bytes / GB,
        }


def _attention_weights(plan: Plan) -> float:
    """One layer's attention weights on a die: split over its TP group; a data-parallel MLA prefill shards
    the up-projections over its SP-TP-SP group, and the output projection too where the stack's is
    row-parallel over that group."""
    m = plan.model
    if m.attention.kind == "mla" and plan.phase == _PREFILL and plan.tp == 1:
        down, q_up, kv_up = m.mla_projection_params()
        group = plan.deployment.attention_tp
        o_proj = float(m.attention.num_heads * m.attention.v_head_dim * m.hidden)
        stack = load_stack(plan.deployment.stack) if plan.deployment.stack else None
        if stack is not None and stack.memory is not None and stack.memory.o_proj_split:
            o_proj /= group
        return down + (q_up + kv_up) / group + o_proj
    return m.attention_params(plan.tp)


def expert_weights_per_layer(plan: Plan) -> float:
    """Routed expert slots at 1/moe_tp of their width; the shared experts are local in full, or split over
    the expert group where every die sees every token (all-reduce or all-gather MoE)."""
    m, lay = plan.model, plan.layout
    assert m.moe is not None and lay is not None
    routed = lay.routed_slots_per_die * m.expert_params() / plan.deployment.moe_tp
    if lay.shared_dies:
        return routed
    shards = plan.moe_group if plan.moe_comm in (_ALL_REDUCE, _ALL_GATHER) else 1
    return routed + m.moe.num_shared * m.expert_params() / shards


def weights_per_die(plan: Plan) -> float:
    """Attention and dense FFN are replicated per die (DP) or split over a TP group; experts occupy their
    slots; embedding and LM head are BF16 (the head split with TP)."""
    m, wb, g = plan.model, plan.weight_bytes, plan.tp
    per_layer_attn = (_attention_weights(plan) + m.norm_params()) * wb
    total = m.num_layers * per_layer_attn + m.num_dense_layers * (
        m.dense_ffn_params() * wb / g if m.num_dense_layers else 0.0
    )
    if m.moe and plan.layout:
        experts = expert_weights_per_layer(plan) * wb
        offload = plan.deployment.offload_gb * GB
        if offload >= m.num_moe_layers * experts:
            raise InfeasibleDeploymentError(
                f"offload {plan.deployment.offload_gb:g} GB per die is not less than the die's "
                f"{m.num_moe_layers * experts / GB:.1f} GB of routed and shared experts"
            )
        router = m.router_params() * BYTES_PER_ELEMENT["bf16"]
        total += m.num_moe_layers * (experts + router) - offload
        if plan.deployment.mtp and plan.deployment.speculation == "mtp":  # n-gram drafts load no layer
            total += per_layer_attn + experts + router + 2 * m.hidden * m.hidden * wb
    head = (m.lm_head_params() or 0) / g
    if plan.deployment.mtp and plan.deployment.speculation == "eagle3":  # the draft head, in BF16
        head += eagle3_head(m).params() / g
    return total + (m.embedding_params() + head) * BYTES_PER_ELEMENT["bf16"]


def _buffers(plan: Plan) -> float:
    """Decode: the static dispatch and combine buffers, rank_num × max_tokens × msg (P3 §4.2.1).
    Prefill: activations of the batch (hidden states in and out of the MoE, expert intermediates)."""
    m = plan.model
    if not m.moe or not plan.layout:
        return 4 * plan.tokens_per_die * m.hidden * ACT_BYTES + gathered_kv_bytes(plan)
    if plan.decodes and plan.moe_comm != _DISPATCH:
        return 4 * plan.tokens_per_die * m.hidden * ACT_BYTES * max(plan.moe_group // plan.tp, 1)
    if plan.decodes:
        max_tokens = plan.tokens_per_die * min(m.moe.top_k, plan.layout.routed_slots_per_die)
        disp = dispatch_message_bytes(plan, plane_for(plan.hardware, plan.layout.ep))
        return plan.layout.ep * max_tokens * (disp + m.hidden * ACT_BYTES)
    routed = plan.tokens_per_die * (m.moe.top_k + m.moe.num_shared)
    activations = routed * (2 * m.hidden + 2 * m.moe.intermediate) * ACT_BYTES
    return activations + 4 * plan.tokens_per_die * m.hidden * ACT_BYTES + gathered_kv_bytes(plan)


def reserve_bytes(plan: Plan, used: float, buffers: float = 0.0) -> float:
    """HBM per die kept from weights, buffers and KV: the deployment's, else what the stack's memory
    setting leaves (of all HBM, or of what weights leave), never less than the chip's runtime reserve.
    A stack whose setting bounds only weights and KV keeps its step buffers inside what it leaves, so only
    the part of the reserve the buffers do not fill is added beside them."""
    stack = load_stack(plan.deployment.stack) if plan.deployment.stack else None
    kept = _kept_bytes(plan, used, stack)
    if stack is not None and stack.memory is not None and stack.memory.holds == "weights_kv":
        return max(kept - buffers, 0.0)
    return kept


def _kept_bytes(plan: Plan, used: float, stack: StackProfile | None) -> float:
    chip = plan.hardware.chip
    floor = chip.runtime_reserve_gb.value * GB
    if plan.deployment.reserve_gb is not None:
        return plan.deployment.reserve_gb * GB
    if stack is None or stack.memory is None:
        return floor
    capacity, kept = chip.hbm_bytes_per_die, 1.0 - stack.memory.fraction.value
    if stack.memory.of == "total":
        return max(kept * capacity, floor)
    return floor + kept * max(capacity - floor - used, 0.0)


def draft_kv_bytes(plan: Plan, seq_len: int) -> float:
    """An EAGLE-3 head's own cache of one sequence on a die: its one layer's keys and values at the KV
    format, split by KV head over the TP group like the target's (SGLang and vLLM keep it in the same pool)."""
    if not plan.deployment.mtp or plan.deployment.speculation != "eagle3":
        return 0.0
    draft = eagle3_head(plan.model).draft
    return draft.kv_bytes(seq_len, plan.kv_bytes) / min(plan.tp, draft.attention.num_kv_heads)


def memory_use(plan: Plan) -> MemoryUse:
    d, m = plan.deployment, plan.model
    chip = plan.hardware.chip
    capacity = chip.hbm_bytes_per_die
    weights = weights_per_die(plan)
    buffers = _buffers(plan)
    reserve = reserve_bytes(plan, weights + buffers, buffers)
    max_len = d.input_len + d.output_len if plan.decodes else d.input_len
    per_seq = m.kv_bytes(max_len, plan.kv_bytes) / plan.kv_shards + draft_kv_bytes(plan, max_len)
    kv = plan.seqs_per_die * per_seq if plan.decodes else kv_per_die_bytes(plan, per_seq)
    free = capacity - weights - buffers - reserve
    return MemoryUse(
        weights_bytes=weights,
        kv_bytes=kv,
        buffers_bytes=buffers,
        reserve_bytes=reserve,
        capacity_bytes=capacity,
        max_seqs_per_die=max(free, 0.0) / per_seq,
        max_batch_per_chip=max(free, 0.0) / per_seq * chip.num_dies / plan.tp,
    )


def check_fits(plan: Plan, mem: MemoryUse) -> None:
    if mem.total_bytes <= mem.capacity_bytes:
        return
    g = mem.as_gb()
    what = (
        f"weights {g['weights']:.1f} + KV {g['kv']:.1f} + buffers {g['buffers']:.1f} + runtime reserve "
        f"{g['reserve']:.1f} = {g['total']:.1f} GB > {g['capacity']:.1f} GB HBM per die"
    )
    if plan.decodes:
        cap = mem.max_batch_per_chip
        length = plan.deployment.input_len + plan.deployment.output_len
        what += f"; KV fits at most {cap:.0f} sequences per chip at {length} tokens"
    raise InfeasibleDeploymentError(f"deployment does not fit: {what}")
