"""Prefill context parallelism (CP): a long prompt's tokens are split over the ``cp`` dies of a CP group
(SGLang's NSA prefill context parallelism, vLLM's prefill CP). Each rank projects its own tokens, then the
group all-gathers every layer's new KV (the MLA latent and rope key, the sparse-attention indexer's key; a
GQA model's K and V) so that each rank's queries attend causally to the whole prompt before them. SGLang
splits the prompt zigzag (2 x cp chunks, rank i taking chunks i and 2cp-1-i) so every rank sees the same
causal work: the mean context of the prompt, as the unsplit prefill prices it.

What CP adds to the step is the all-gather, priced as a ring collective on the plane the group spans (UB or
NVLink inside the scale-up domain, RDMA beyond it). What it changes in memory is that each rank holds 1/cp
of each prompt's KV and activations (``kv_per_die_bytes``) plus one layer's gathered KV at a time
(``gathered_kv_bytes``)."""

from __future__ import annotations

from cloudmatrix.cost.kernels import tp_collective
from cloudmatrix.cost.ops import Op, OpClass, Stream
from cloudmatrix.deploy import Plan


def kv_bytes_per_token_layer(plan: Plan) -> float:
    """KV one token adds to one layer's cache at the KV format, the indexer's key included."""
    m = plan.model
    return m.attention.kv_elems_per_token() * plan.kv_bytes + m.indexer_key_bytes_per_token() / m.num_layers


def kv_all_gather(plan: Plan, tokens: float) -> list[Op]:
    """The layer's KV of the group's tokens gathered onto every rank: each rank brings ``tokens`` and
    receives the other cp - 1 ranks' (none without CP)."""
    cp = plan.cp
    group_bytes = cp * tokens * kv_bytes_per_token_layer(plan)
    return tp_collective(plan, "all_gather", cp, group_bytes, Stream.ATTENTION, "cp_kv_all_gather")


def with_kv_gather(plan: Plan, ops: list[Op], tokens: float) -> list[Op]:
    """``ops`` of one attention half with the CP all-gather placed where the attention first needs the whole
    prompt's KV: after the projections (the indexer's key projection too), before the first attention-class
    op (the indexer's scoring or the attention core)."""
    gather = kv_all_gather(plan, tokens)
    if not gather:
        return ops
    at = next((i for i, op in enumerate(ops) if op.op_class == OpClass.ATTENTION), len(ops))
    return [*ops[:at], *gather, *ops[at:]]


def gathered_kv_bytes(plan: Plan) -> float:
    """Per die: one layer's KV of the whole group's prompt tokens, held while that layer attends."""
    if plan.cp <= 1:
        return 0.0
    return plan.cp * (plan.tokens_per_die + plan.cached_tokens_per_die) * kv_bytes_per_token_layer(plan)


def kv_per_die_bytes(plan: Plan, prompt_kv_bytes: float) -> float:
    """A prefill die's share of its prompts' KV: the prompts a CP group computes, split over its cp ranks
    (``seqs_per_die`` already counts a die's share of a prompt, so without CP this is the same product)."""
    prompts_per_group = plan.seqs_per_die * plan.cp
    return prompts_per_group * prompt_kv_bytes / plan.cp
