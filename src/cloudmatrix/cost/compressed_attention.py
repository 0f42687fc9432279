"""DeepSeek-V4's compressed attention on one die (catalog/compressed_attention.py has the shapes): the
projections, the compressors that pool the new tokens' KV, CSA's lightning indexer and top-k selection,
the shared-KV multi-query attention over the window and the compressed entries, and the mHC mixing of the
widened residual stream. Every op is the mean over the model's layers (sliding, CSA and HCA layers differ),
as ``layers.py`` prices one mean layer times the layer count.

A TP group splits the head-axis weights (query up-projection, grouped output projection and its mix) and
all-reduces the output; the rest is replicated, as MLA's down-projections are. The single shared KV head
has no head axis, so every die of the group reads the group's whole cache."""

from __future__ import annotations

from cloudmatrix.catalog.compressed_attention import CSA_RATIO, INDEX_SCALE_BYTES, CompressedAttentionSpec
from cloudmatrix.cost.kernels import ACT_BYTES, gemm_op, tp_collective
from cloudmatrix.cost.ops import Op, OpClass, Stream, new_op
from cloudmatrix.cost.sparse_attention import SCORE_BYTES, chip_indexer_precision
from cloudmatrix.deploy import Plan


def _mean(c: CompressedAttentionSpec, per_layer: list[float]) -> float:
    return sum(per_layer) / len(c.ratios)


def _stored(c: CompressedAttentionSpec, context: float) -> float:
    """Cached entries per sequence per layer (mean): the window and the compressed entries."""
    return _mean(c, [min(context, c.window) + (context / r if r else 0.0) for r in c.ratios])


def _core(plan: Plan, c: CompressedAttentionSpec, queries: float, seqs: float, context: float, name: str) -> list[Op]:
    """``queries`` tokens of ``seqs`` sequences attending at ``context`` tokens each: CSA's indexer scores
    every compressed index key of its layers and keeps the top-k; the attention reads each attended entry
    once per sequence (at most the whole cache) and does 2 · head_dim FLOPs per head for scores and again
    for values."""
    if queries <= 0:
        return []
    heads, d, kvb, s = c.num_heads / plan.tp, c.head_dim, plan.kv_bytes, Stream.ATTENTION
    attended = _mean(c, [c.attended(r, context) for r in c.ratios])
    read = min(_stored(c, context), attended * queries / max(seqs, 1e-9))
    ops = [
        new_op(
            name,
            OpClass.ATTENTION,
            s,
            2.0 * queries * heads * 2 * d * attended,
            seqs * read * d * kvb + 2 * queries * heads * d * ACT_BYTES,
        )
    ]
    csa = c.csa_layers / len(c.ratios)
    if csa == 0:
        return ops
    keys, selected = context / CSA_RATIO, min(context / CSA_RATIO, float(c.index_topk))
    scores = queries * keys * SCORE_BYTES * csa
    ops += [
        new_op(
            f"{name}_indexer",
            OpClass.ATTENTION,
            s,
            2.0 * queries * c.index_heads * c.index_head_dim * keys * csa,
            seqs * keys * (c.index_head_dim + INDEX_SCALE_BYTES) * csa + scores,
            chip_indexer_precision(plan),  # a stack's DSA indexer format is not its CSA indexer's
        ),
        new_op(f"{name}_topk", OpClass.VECTOR, s, 4.0 * queries * keys * csa, scores + queries * selected * 4.0 * csa),
    ]
    return ops


def _compress_and_mix(plan: Plan, c: CompressedAttentionSpec, tokens: float) -> list[Op]:
    """Per token and layer: the compressor's softmax pool over its projected KV and gate (CSA projects
    twice the width, for its overlapping windows; its indexer pools too) with one cache entry written per
    m tokens; and the two mHC sites, each reading the n residual streams to mix, collapse and re-expand
    them (Sinkhorn iterations on an n × n matrix are negligible)."""
    h, n, d, kvb = plan.model.hidden, c.hc_mult, c.head_dim, plan.kv_bytes
    width = _mean(c, [(2 * d + 2 * c.index_head_dim if r == CSA_RATIO else d) if r else 0.0 for r in c.ratios])
    written = _mean(c, [d * kvb / r if r else 0.0 for r in c.ratios])
    s = Stream.ATTENTION
    return [
        new_op(
            "kv_compress", OpClass.VECTOR, s, 6.0 * tokens * width, tokens * (2 * width * ACT_BYTES + written + d * kvb)
        ),
        new_op("hyper_connections", OpClass.VECTOR, s, 2 * 6.0 * tokens * n * h, 2 * 3 * tokens * n * h * ACT_BYTES),
    ]


def compressed_attention_ops(plan: Plan, share: float) -> list[Op]:
    """The attention half of a V4 layer for ``share`` of the die's batch, decode-shaped or prefill."""
    m = plan.model
    c = m.compressed
    assert c is not None
    h, g, s = m.hidden, plan.tp, Stream.ATTENTION
    tokens = plan.tokens_per_die * share
    shared_w = c.shared_params(h) + c.mean_compressor_params(h)
    split_w = c.head_split_params(h)
    heads_dim = c.num_heads * c.head_dim / g
    proj_io = tokens * (h + c.q_lora_rank + heads_dim + c.head_dim) * ACT_BYTES
    ops = [gemm_op("attn_shared_proj", s, tokens, shared_w, plan, proj_io)]
    if plan.decodes:
        decode = plan.decode_tokens_per_die * share
        ops += _core(plan, c, decode, plan.seqs_per_die * share, plan.kv_len, "compressed_attention")
        chunk = plan.chunk_tokens_per_die * share
        prompt = plan.deployment.input_len
        ops += _core(plan, c, chunk, chunk / max(prompt, 1), (prompt + 1) / 2, "chunk_attention")
    else:
        cached = plan.cached_len
        computed = plan.kv_len - cached
        context = cached + (computed + 1) / 2  # causal: on average half the computed suffix
        ops += _core(plan, c, tokens, tokens / max(computed, 1.0), context, "compressed_attention")
    out_io = tokens * (heads_dim + c.o_groups * c.o_lora_rank / g + h) * ACT_BYTES
    ops += [
        gemm_op("attn_head_proj", s, tokens / g, split_w, plan, out_io, weight_shards=g),
        *_compress_and_mix(plan, c, tokens),
        *tp_collective(plan, "all_reduce", g, tokens * h * ACT_BYTES, s, "attn_all_reduce"),
    ]
    return ops
