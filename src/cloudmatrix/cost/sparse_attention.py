"""DeepSeek Sparse Attention (DeepSeek-V3.2-Exp report §2): the lightning indexer scores every cached token
for every query (linear in the context per token), and MLA then attends to the top-k tokens only (capped).
The indexer runs in the lowest format the chip computes (FP8 on Hopper and Blackwell, INT8 on the 910C,
which has no FP8) and caches one 1-byte key of ``index_head_dim`` values and an FP32 scale per token, unless
the engine's kernel fixes another format (SGLang on Ascend: BF16 queries and keys, no scale; stacks.yaml).

A TP group replicates the indexer (its key path has no head axis), as it does MLA's down-projections, so
every die of the group scores the group's tokens against the group's cache."""

from __future__ import annotations

from cloudmatrix.catalog.model_spec import IndexerSpec
from cloudmatrix.catalog.stacks import stack_indexer_precision
from cloudmatrix.cost.kernels import ACT_BYTES, gemm_op
from cloudmatrix.cost.ops import Op, OpClass, Stream, new_op
from cloudmatrix.deploy import Plan
from cloudmatrix.units import BYTES_PER_ELEMENT

SCORE_BYTES = 4.0  # FP32 index scores, written by the indexer and read by the top-k selection
# The score of a cached token is sum over heads of w_h * ReLU(q_h . k): per head and (query, token) pair a
# ReLU, a scale and an accumulate on the vector lanes after the matmul (fused in DeepGEMM's fp8_mqa_logits
# epilogue; on the AIV after the AIC on Ascend), the per-head logits kept on chip (assumed).
REDUCE_OPS_PER_HEAD = 3.0
# Top-k by radix selection (the sparse-attention serving kernels' fast top-k): a histogram pass over every
# score to find the threshold bin, then a pass that gathers the scores above it and refines the few
# candidates; two full reads of the scores at two vector ops per score each.
SELECT_PASSES = 2.0
SELECT_OPS_PER_PASS = 2.0


def chip_indexer_precision(plan: Plan) -> str:
    """FP8 where the chip has FP8 units, else INT8, else BF16."""
    peaks = plan.hardware.chip.die.peak_tflops
    return next((p for p in ("fp8", "int8") if p in peaks), "bf16")


def indexer_precision(plan: Plan) -> str:
    """The format the engine's DSA lightning-indexer kernel takes where its stack fixes one, else the chip's."""
    return stack_indexer_precision(plan.deployment.stack) or chip_indexer_precision(plan)


def causal_attended(indexer: IndexerSpec | None, cached: float, computed: float) -> float:
    """Mean tokens a computed token attends to when ``computed`` tokens follow ``cached`` ones causally
    (position p sees p tokens): the plain mean, or the mean of min(p, top-k) with sparse attention."""
    if computed <= 0:
        return 0.0
    first, last = cached + 1.0, cached + computed
    if indexer is None or last <= indexer.topk:
        return (first + last) / 2
    k = float(indexer.topk)
    if first >= k:
        return k
    below = k - first + 1  # positions first..k see themselves
    return ((first + k) / 2 * below + k * (computed - below)) / computed


def indexer_ops(plan: Plan, queries: float, seqs: float, context: float, selected: float, stream: Stream) -> list[Op]:
    """The indexer for ``queries`` tokens of ``seqs`` sequences scoring ``context`` cached tokens each on
    average: its projections (query heads from the query latent, one key, per-head weights), the scoring
    (2 · heads · head_dim FLOPs per query and cached token, the cached keys read once per sequence), the
    reduction of the per-head logits to one score (vector work, per head), and the top-k selection's passes
    over the scores, which write the ``selected`` indices a query attends to (on average; never more than
    top-k, nor than the tokens it sees: the attention core's own count)."""
    ix = plan.model.attention.indexer
    if ix is None or queries <= 0:
        return []
    assert selected <= min(context, ix.topk) * (1 + 1e-9), "a query selects at most top-k of the tokens it sees"
    m, fmt = plan.model, indexer_precision(plan)
    elem = BYTES_PER_ELEMENT[fmt]  # a query or key value in the format the indexer runs in
    key_bytes = ix.key_bytes_at(elem)  # as the scoring reads it (the KV pool is sized with ``ix.key_bytes``)
    share = ix.own_layers / m.num_layers  # layers that reuse the previous selection run no indexer
    weights = ix.params(m.hidden, m.attention.q_lora_rank) * share
    io = queries * (ix.num_heads * ix.head_dim * elem + key_bytes) * share
    score_bytes = queries * context * SCORE_BYTES * share
    return [
        gemm_op("indexer_proj", stream, queries, weights, plan, io + queries * m.hidden * ACT_BYTES * share),
        new_op(
            "indexer",
            OpClass.ATTENTION,
            stream,
            2.0 * queries * ix.num_heads * ix.head_dim * context * share,
            seqs * context * key_bytes * share + score_bytes,
            fmt,
        ),
        new_op(
            "indexer_reduce", OpClass.VECTOR, stream, REDUCE_OPS_PER_HEAD * ix.num_heads * queries * context * share
        ),
        new_op(
            "indexer_topk",
            OpClass.VECTOR,
            stream,
            SELECT_PASSES * SELECT_OPS_PER_PASS * queries * context * share,
            SELECT_PASSES * score_bytes + queries * selected * 4.0 * share,
        ),
    ]
