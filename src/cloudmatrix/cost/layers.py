"""Operator lists for one transformer layer (and the once-per-step head) on one die.

``share`` is the fraction of the die's batch the ops cover: 1 for a whole batch, 1/2 for one of two
microbatches. Weights are read once per call, so two microbatches read them twice (why microbatching can
lose at small batch). Shapes follow the model spec; formulas are in docs/model.md."""

from __future__ import annotations

from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.cost import comm
from cloudmatrix.cost.compressed_attention import compressed_attention_ops
from cloudmatrix.cost.context_parallel import with_kv_gather
from cloudmatrix.cost.kernels import ACT_BYTES, LOGIT_BYTES, comm_op, gemm_op, norm_op, swiglu_op, tp_collective
from cloudmatrix.cost.linear_attention import hybrid_attention_ops
from cloudmatrix.cost.moe import moe_ffn
from cloudmatrix.cost.ops import Leg, LinkRole, Op, OpClass, Stream, Transfer, new_op
from cloudmatrix.cost.sparse_attention import causal_attended, indexer_ops
from cloudmatrix.deploy import Plan

# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_ATTENTION, _VECTOR = OpClass.ATTENTION, OpClass.VECTOR
_ATTENTION_STREAM, _MOE_STREAM = Stream.ATTENTION, Stream.MOE
_BULK, _CACHE_LOAD = Transfer.BULK, Transfer.CACHE_LOAD
_SCALE_UP, _STORAGE = LinkRole.SCALE_UP, LinkRole.STORAGE


def _mean_context(model: ModelSpec, kv_len: float) -> float:
    """Context a query attends to, averaged over layers (sliding-window layers see at most the window)."""
    sliding = len(model.sliding_layer_ids)
    if not sliding or model.sliding_window is None:
        return kv_len
    return ((model.num_layers - sliding) * kv_len + sliding * min(kv_len, model.sliding_window)) / model.num_layers


# ---- attention -------------------------------------------------------------------------------------------
def _chunk_attention(plan: Plan, share: float) -> list[Op]:
    """Aggregated serving: the prompt chunk prefilled in this step attends to its prompt so far (on average
    half the prompt), in the same absorbed form as decode."""
    chunk = plan.chunk_tokens_per_die * share
    if chunk <= 0:
        return []
    m, a = plan.model, plan.model.attention
    full = _mean_context(m, (plan.deployment.input_len + 1) / 2)
    ctx = _mean_context(m, causal_attended(a.indexer, 0.0, plan.deployment.input_len))
    per_pos = (
        2 * a.kv_lora_rank + a.qk_rope_head_dim
        if a.kind == "mla" and a.kv_lora_rank
        else (a.qk_head_dim + a.v_head_dim)
    )
    cached = a.kv_elems_per_token() if a.kind == "mla" else a.num_kv_heads * (a.qk_head_dim + a.v_head_dim)
    g = plan.tp  # a TP group's dies each take their share of the heads (and KV heads)
    return [
        new_op(
            "chunk_attention",
            _ATTENTION,
            _ATTENTION_STREAM,
            2.0 * chunk * a.num_heads * per_pos * ctx / g,
            chunk * cached * plan.kv_bytes / plan.kv_shards + 2 * chunk * a.num_heads * per_pos * ACT_BYTES / g,
        ),
        *indexer_ops(plan, chunk, share, full, ctx, _ATTENTION_STREAM),
    ]


def _decode_attention(plan: Plan, share: float) -> list[Op]:
    """Attention of a decode-shaped step: projections over every token of the step (decode tokens plus any
    prompt chunk, weights read once), attention over the cache for the decode tokens."""
    *before_out, out = _decode_attention_ops(plan, share)
    reduce = _tp_all_reduce(plan, plan.tokens_per_die * share, _ATTENTION_STREAM, "attn_all_reduce")
    return [*before_out, *_chunk_attention(plan, share), out, *reduce]


def _tp_all_reduce(plan: Plan, tokens: float, stream: Stream, name: str) -> list[Op]:
    """Tensor-parallel attention or dense FFN: the partial sums of a row-split projection are all-reduced
    across the group."""
    return tp_collective(plan, "all_reduce", plan.tp, tokens * plan.model.hidden * ACT_BYTES, stream, name)


def _decode_attention_ops(plan: Plan, share: float) -> list[Op]:
    """Projections, (sparse attention's indexer,) the attention core, and the output projection last."""
    m, a, h = plan.model, plan.model.attention, plan.model.hidden
    tokens, seqs = plan.tokens_per_die * share, plan.seqs_per_die * share
    decode_tokens = plan.decode_tokens_per_die * share
    ctx, kvb = _mean_context(m, plan.kv_len), plan.kv_bytes
    s = _ATTENTION_STREAM
    if a.kind == "mla":
        assert a.kv_lora_rank is not None
        g, lat = plan.tp, a.kv_lora_rank + a.qk_rope_head_dim
        heads = a.num_heads / g  # a TP group splits the heads; its dies each compute the down-projections
        # Absorbed MLA: W_UK folds into the query, W_UV into the output (P3 §4.2.2).
        down, q_up, _ = m.mla_projection_params()
        prolog_w = down + (q_up + a.num_heads * a.qk_nope_head_dim * a.kv_lora_rank) / g
        out_w = a.num_heads * a.kv_lora_rank * a.v_head_dim + a.num_heads * a.v_head_dim * h
        attended = a.attended(ctx)  # sparse attention: the top-k tokens the indexer selected
        core_flops = 2.0 * decode_tokens * heads * (2 * a.kv_lora_rank + a.qk_rope_head_dim) * attended
        # the latent has no head axis: every die of the group reads the group's whole cache
        core_bytes = seqs * attended * lat * kvb + decode_tokens * heads * (lat + a.kv_lora_rank) * ACT_BYTES
        prolog_io = tokens * (h + heads * lat) * ACT_BYTES + tokens * lat * kvb
        out_io = tokens * (heads * a.kv_lora_rank + h) * ACT_BYTES
        core = new_op("attention_core", _ATTENTION, s, core_flops, core_bytes)
        return [
            gemm_op("mla_prolog", s, tokens, prolog_w, plan, prolog_io),
            *indexer_ops(plan, decode_tokens, seqs, ctx, attended, s),
            core,
            gemm_op("o_proj", s, tokens / g, out_w, plan, out_io, weight_shards=g),
        ]
    # GQA; with tensor parallelism g each die holds 1/g of the heads and 1/kv_shards of the KV cache
    g, ks = plan.tp, plan.kv_shards
    kv_w = a.num_kv_heads * (a.qk_head_dim + a.v_head_dim)
    qkv_w = h * (a.num_heads * a.qk_head_dim + kv_w)
    head_dims = a.num_heads * (a.qk_head_dim + a.v_head_dim)
    core_flops = 2.0 * decode_tokens * head_dims * ctx / g
    core_bytes = seqs * ctx * kv_w * kvb / ks + decode_tokens * head_dims * ACT_BYTES / g
    return [
        gemm_op(
            "qkv_proj", s, tokens / g, qkv_w, plan, tokens * h * ACT_BYTES + tokens * kv_w * kvb / ks, weight_shards=g
        ),
        new_op("attention_core", _ATTENTION, s, core_flops, core_bytes),
        gemm_op(
            "o_proj", s, tokens / g, a.num_heads * a.v_head_dim * h, plan, 2 * tokens * h * ACT_BYTES, weight_shards=g
        ),
    ]


def _prefill_attention(plan: Plan, share: float) -> list[Op]:
    """MLA as SP-TP-SP (P3 §4.3): down-projections on each die's own tokens (SP), all-gather of the latents
    to the TP group, up-projections and 128-head MHA sharded by heads (TP), all-to-all back, o_proj (SP).
    GQA models run sequence-parallel attention, or with ``tp`` > 1 Megatron-style tensor parallelism (each
    die takes 1/g of the heads for the group's tokens, then an all-reduce)."""
    m, a, h, g = plan.model, plan.model.attention, plan.model.hidden, plan.tp
    tokens, cached = plan.tokens_per_die * share, plan.cached_len
    # causal: a computed token sees the cached prefix and on average half of the computed suffix (sparse
    # attention: at most its top-k of them)
    full = _mean_context(m, causal_attended(None, cached, plan.kv_len - cached))
    ctx = _mean_context(m, causal_attended(a.indexer, cached, plan.kv_len - cached))
    s = _ATTENTION_STREAM
    heads_dim = a.qk_head_dim + a.v_head_dim
    dense_flops = 2.0 * tokens * a.num_heads * heads_dim * full / g
    # sparse MLA runs in its MQA (latent) form over the top-k; short prompts run cheaper as dense MHA with
    # the selection as a mask (DeepSeek-V3.2-Exp report §3): the cheaper form is the one served
    sparse_flops = 2.0 * tokens * a.num_heads * (2 * (a.kv_lora_rank or 0) + a.qk_rope_head_dim) * ctx / g
    sparse = a.indexer is not None and sparse_flops < dense_flops
    # the dense form is a fused causal attention over the keys up to the sequence's end (the kernel the
    # stack names prices it by that length, where measured)
    fa = new_op(
        "sparse_attention" if sparse else "flash_attention",
        _ATTENTION,
        s,
        sparse_flops if sparse else dense_flops,
        tokens * a.num_heads * (2 * a.qk_head_dim + 2 * a.v_head_dim) * ACT_BYTES / g,
        kernel="" if sparse else "attention",
        rows=0.0 if sparse else float(plan.kv_len),
    )
    if a.kind != "mla":
        kv_w = a.num_kv_heads * (a.qk_head_dim + a.v_head_dim)
        qkv_io = tokens * h * ACT_BYTES + tokens * kv_w * plan.kv_bytes / plan.kv_shards
        return [
            gemm_op("qkv_proj", s, tokens / g, h * (a.num_heads * a.qk_head_dim + kv_w), plan, qkv_io, weight_shards=g),
            fa,
            gemm_op(
                "o_proj",
                s,
                tokens / g,
                a.num_heads * a.v_head_dim * h,
                plan,
                2 * tokens * h * ACT_BYTES,
                weight_shards=g,
            ),
            *_tp_all_reduce(plan, tokens, s, "attn_all_reduce"),
        ]
    assert a.kv_lora_rank is not None
    g = plan.deployment.attention_tp
    lat = a.kv_lora_rank + a.qk_rope_head_dim
    q_lat = a.q_lora_rank or 0
    down_w = h * (q_lat + lat)
    up_w = (q_lat * a.num_heads * a.qk_head_dim if q_lat else h * a.num_heads * a.qk_head_dim) + (
        a.kv_lora_rank * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim)
    )
    local = g <= plan.hardware.dies_per_node
    role = comm.role_for(plan.hardware, g)
    gather = Leg(_BULK, role, (g - 1) * tokens * (q_lat + lat) * ACT_BYTES, g - 1, local)
    a2a = Leg(_BULK, role, (g - 1) / g * tokens * a.num_heads * a.v_head_dim * ACT_BYTES, g - 1, local)
    # data-parallel attention (g = 1) gathers and scatters nothing: no communication op, no stage boundary
    ops = [
        gemm_op("attn_down_proj", s, tokens, down_w, plan, tokens * (h + q_lat + lat) * ACT_BYTES),
        *([comm_op("attn_all_gather", s, gather)] if g > 1 else []),
        gemm_op("attn_up_proj", s, tokens, up_w, plan, tokens * a.num_heads * heads_dim * ACT_BYTES, weight_shards=g),
    ]
    prefix = plan.cached_tokens_per_die * share
    if prefix > 0:  # the cached latent of the prefix is expanded to per-head K and V for the suffix's MHA
        kv_up_w = a.kv_lora_rank * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim)
        io = prefix * (lat * plan.kv_bytes + a.num_heads * heads_dim * ACT_BYTES)
        ops.append(gemm_op("cached_kv_up_proj", s, prefix, kv_up_w, plan, io, weight_shards=g))
    seqs = tokens / max(plan.kv_len - cached, 1.0)
    return ops + [
        *indexer_ops(plan, tokens, seqs, full, ctx, s),
        fa,
        *([comm_op("attn_all_to_all", s, a2a)] if g > 1 else []),
        gemm_op("o_proj", s, tokens, a.num_heads * a.v_head_dim * h, plan, 2 * tokens * h * ACT_BYTES),
    ]


# ---- feed-forward ---------------------------------------------------------------------------------------
def _dense_ffn(plan: Plan, share: float) -> list[Op]:
    m, tokens, g = plan.model, plan.tokens_per_die * share, plan.tp
    assert m.dense_intermediate is not None
    inter = m.dense_intermediate // g  # tensor parallelism splits the FFN columns
    io = tokens * (2 * m.hidden + 2 * inter) * ACT_BYTES
    return [
        norm_op("ffn_norm", _MOE_STREAM, tokens, plan),
        gemm_op("dense_ffn", _MOE_STREAM, tokens / g, m.dense_ffn_params(), plan, io, weight_shards=g),
        swiglu_op(_MOE_STREAM, tokens, inter, plan),
        *_tp_all_reduce(plan, tokens, _MOE_STREAM, "ffn_all_reduce"),
    ]


def attention_ops(plan: Plan, share: float) -> list[Op]:
    """The attention half of a decoder layer, the same in dense and MoE layers."""
    tokens = plan.tokens_per_die * share
    norm = [norm_op("attn_norm", _ATTENTION_STREAM, tokens, plan)]
    if plan.model.compressed is not None:
        return norm + compressed_attention_ops(plan, share)
    if plan.model.linear is not None:
        return norm + hybrid_attention_ops(plan, share)
    if plan.decodes:
        return norm + _decode_attention(plan, share)
    return norm + with_kv_gather(plan, _prefill_attention(plan, share), tokens)


def ffn_ops(plan: Plan, moe: bool, share: float) -> list[Op]:
    """The feed-forward half of a decoder layer: the MoE FFN or the dense FFN."""
    return moe_ffn(plan, share) if moe else _dense_ffn(plan, share)


def layer_ops(plan: Plan, moe: bool, share: float = 1.0) -> list[Op]:
    """All ops of one decoder layer (dense or MoE) for ``share`` of the die's batch."""
    return attention_ops(plan, share) + ffn_ops(plan, moe, share)


def head_ops(plan: Plan, tokens: float) -> list[Op]:
    """LM head (kept in BF16, a sensitive layer per P3 §4.5) and in-NPU sampling over the vocabulary."""
    m, g = plan.model, plan.tp  # tensor parallelism splits the vocabulary
    head_w = m.lm_head_params() or m.embedding_params()
    logits = tokens * m.vocab / g * LOGIT_BYTES
    return [
        gemm_op("lm_head", _ATTENTION_STREAM, tokens / g, head_w, plan, logits, precision="bf16", weight_shards=g),
        new_op("sampling", _VECTOR, _ATTENTION_STREAM, 8.0 * tokens * m.vocab / g, 3.0 * logits),
    ]


def cache_load_op(plan: Plan) -> Op:
    """The batch's cached prefix KV (all layers) read from the EMS pool before its suffix is computed: over
    UB, the die's own scale-up link; over VPC, its share of the node's storage plane."""
    kv = plan.cached_tokens_per_die * plan.model.kv_bytes_per_token(plan.kv_bytes)
    role = _SCALE_UP if plan.deployment.cache_plane == "ub" else _STORAGE
    return comm_op("ems_kv_load", _ATTENTION_STREAM, Leg(_CACHE_LOAD, role, kv))


def mtp_extra_ops(plan: Plan) -> list[Op]:
    """The MTP block's own projection (eh_proj: concat of hidden and embedding, 2h → h)."""
    m, tokens = plan.model, plan.tokens_per_die
    return [
        gemm_op(
            "mtp_eh_proj", _ATTENTION_STREAM, tokens, 2 * m.hidden * m.hidden, plan, tokens * 3 * m.hidden * ACT_BYTES
        )
    ]
