"""HBM per die of the two AFD pools (design.md §3 rule 6, per pool). An attention die holds the attention,
dense-layer, router, embedding and head weights and its sequences' KV, but no experts; an expert die holds
its expert slots (and any shared-expert copy) of every MoE layer, and the hidden states of the
microbatches in flight, but no KV. Each must fit, or the deployment is refused naming the pool."""

from __future__ import annotations

from cloudmatrix.cost.afd import AfdPlans
from cloudmatrix.cost.comm import plane_for
from cloudmatrix.cost.kernels import ACT_BYTES
from cloudmatrix.cost.memory import MemoryUse, check_fits, expert_weights_per_layer, reserve_bytes, weights_per_die
from cloudmatrix.cost.moe import dispatch_message_bytes, expert_work
from cloudmatrix.deploy import Plan
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.units import GB_DECIMAL


def _expert_layers(p: Plan) -> int:
    """MoE layers whose experts a die of the pool would hold: the model's, and the MTP block's."""
    d = p.deployment
    return p.model.num_moe_layers + (1 if d.mtp and d.speculation == "mtp" else 0)


def attention_memory(plans: AfdPlans) -> MemoryUse:
    """Weights without the experts (the attention plan's own expert slots taken back out), KV of the die's
    sequences at their full length, the activations and the crossing's send and receive buffers."""
    p, m = plans.attention, plans.attention.model
    assert m.moe is not None
    weights = weights_per_die(p) - _expert_layers(p) * expert_weights_per_layer(p) * p.weight_bytes
    plane = plane_for(p.hardware, plans.group)
    messages = p.tokens_per_die * m.moe.top_k
    buffers = 4 * p.tokens_per_die * m.hidden * ACT_BYTES + messages * (
        dispatch_message_bytes(p, plane) + m.hidden * ACT_BYTES
    )
    reserve = reserve_bytes(p, weights + buffers)
    d = p.deployment
    per_seq = m.kv_bytes(d.input_len + d.output_len, p.kv_bytes) / p.kv_shards
    capacity = p.hardware.chip.hbm_bytes_per_die
    free = max(capacity - weights - buffers - reserve, 0.0)
    return MemoryUse(
        weights_bytes=weights,
        kv_bytes=p.seqs_per_die * per_seq,
        buffers_bytes=buffers,
        reserve_bytes=reserve,
        capacity_bytes=capacity,
        max_seqs_per_die=free / per_seq,
        max_batch_per_chip=free / per_seq * p.hardware.chip.num_dies / p.tp,
    )


def ffn_memory(plans: AfdPlans) -> MemoryUse:
    """The die's expert slots of every MoE layer (less any offloaded), and the rows it receives for the
    whole batch (every microbatch may be in flight) in and out."""
    p, m = plans.ffn, plans.ffn.model
    experts = _expert_layers(p) * expert_weights_per_layer(p) * p.weight_bytes
    offload = p.deployment.offload_gb * GB_DECIMAL
    if offload >= experts:
        raise InfeasibleDeploymentError(
            f"offload {p.deployment.offload_gb:g} GB per die is not less than the FFN die's "
            f"{experts / GB_DECIMAL:.1f} GB of experts"
        )
    rows = expert_work(p, p.tokens_per_die).received
    plane = plane_for(p.hardware, plans.group)
    buffers = rows * (dispatch_message_bytes(p, plane) + m.hidden * ACT_BYTES)
    weights = experts - offload
    return MemoryUse(
        weights_bytes=weights,
        kv_bytes=0.0,
        buffers_bytes=buffers,
        reserve_bytes=reserve_bytes(p, weights + buffers),
        capacity_bytes=p.hardware.chip.hbm_bytes_per_die,
        max_seqs_per_die=0.0,
        max_batch_per_chip=0.0,
    )


def check_pools_fit(plans: AfdPlans) -> tuple[MemoryUse, MemoryUse]:
    """Both pools' memory, each checked; a refusal names the pool."""
    attention, ffn = attention_memory(plans), ffn_memory(plans)
    try:
        check_fits(plans.attention, attention)
    except InfeasibleDeploymentError as e:
        raise InfeasibleDeploymentError(
            f"AFD attention pool ({plans.attention.deployment.num_chips} chips): {e}"
        ) from None
    if ffn.total_bytes > ffn.capacity_bytes:
        g = ffn.as_gb()
        raise InfeasibleDeploymentError(
            f"AFD FFN pool ({plans.ffn.deployment.num_chips} chips): experts {g['weights']:.1f} + buffers "
            f"{g['buffers']:.1f} + runtime reserve {g['reserve']:.1f} = {g['total']:.1f} GB > {g['capacity']:.1f} "
            "GB HBM per die"
        )
    return attention, ffn
