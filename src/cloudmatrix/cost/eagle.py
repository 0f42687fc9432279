"""EAGLE-3 drafting priced as its own passes (design.md §3 rule 5 with a draft head): each of the k draft
passes runs the head's one decoder layer and its draft-vocabulary LM head, the first over one token per
sequence and, in tree drafting (top-k > 1), each later one over the k candidates it expands; once per step
the ``fc`` fuses the target's three hidden states of the step's tokens. The verify pass is the step itself
((1 + k) tokens per sequence, or the token tree's). The acceptance stays an input."""

from __future__ import annotations

import dataclasses

from cloudmatrix.catalog.eagle import Eagle3Head, eagle3_head
from cloudmatrix.cost.kernels import gemm_op
from cloudmatrix.cost.layers import head_ops
from cloudmatrix.cost.ops import Op, Stream
from cloudmatrix.deploy import Plan
from cloudmatrix.deploy_checks import verify_tokens_per_seq
from cloudmatrix.units import BYTES_PER_ELEMENT

ACT_BYTES = BYTES_PER_ELEMENT["bf16"]


def draft_plans(plan: Plan) -> tuple[Plan, Plan, Eagle3Head]:
    """The deployment's plan with the draft head as its model, no experts: the first draft pass over one
    token per sequence, each later one over the top-k candidates it expands (a chain: one again)."""
    head = eagle3_head(plan.model)
    seqs = plan.decode_tokens_per_die / verify_tokens_per_seq(plan.deployment)
    first = dataclasses.replace(plan, model=head.draft, layout=None, tokens_per_die=seqs, chunk_tokens_per_die=0.0)
    topk = plan.deployment.draft_topk
    later = first if topk == 1 else dataclasses.replace(first, tokens_per_die=seqs * topk)
    return first, later, head


def pass_ops(draft: Plan, head: Eagle3Head) -> list[Op]:
    """One draft pass beyond its decoder layer: the embedding half of the 2h-wide QKV input and the head."""
    tokens, h, g = draft.tokens_per_die, draft.model.hidden, draft.tp  # TP splits the head's matrices
    io = tokens * h * ACT_BYTES
    embed = gemm_op("embed_qkv", Stream.ATTENTION, tokens / g, head.embed_qkv_params, draft, io, "bf16", g)
    return [embed, *head_ops(draft, tokens)]


def step_ops(plan: Plan, head: Eagle3Head) -> list[Op]:
    """Once per step: ``fc`` fuses three target hidden states (3h -> h) of every token the step verified."""
    tokens, h, g = plan.decode_tokens_per_die, plan.model.hidden, plan.tp
    io = tokens * 4 * h * ACT_BYTES
    return [gemm_op("fc", Stream.ATTENTION, tokens / g, head.fc_params, plan, io, "bf16", g)]
