"""Hybrid linear attention on one die (catalog/linear_attention.py has the shapes): Qwen3-Next's Gated
DeltaNet layers and its gated full-attention layers, priced as one mean layer (``layers.py`` multiplies by
the layer count): each op carries its kind's share of the layers.

A decode token of a Gated DeltaNet layer reads its sequence's recurrent state, updates it by the delta rule
and writes it back (``recurrence_flops``; the state's bytes twice per sequence and step), after the short
convolution over its channels. A prompt runs the chunked form: the state is read and written once per
sequence and the tokens of a chunk attend to each other (``CHUNK`` tokens, assumed: the chunk the public
kernels use). Full-attention layers are priced as GQA over the cache. A TP group splits every head-axis
weight and the state by value head, then all-reduces the output."""

from __future__ import annotations

from cloudmatrix.catalog.model_spec import STATE_BYTES, ModelSpec
from cloudmatrix.cost.kernels import ACT_BYTES, gemm_op, tp_collective
from cloudmatrix.cost.ops import Op, OpClass, Stream, new_op
from cloudmatrix.deploy import Plan

CHUNK = 64  # tokens per chunk of the chunked delta rule in prefill (assumed)


def _projection_weights(m: ModelSpec) -> tuple[float, float]:
    """Mean input and output projection weights per layer (before any TP split)."""
    a, h, lin = m.attention, m.hidden, m.linear
    assert lin is not None
    n_lin = len(lin.layer_ids)
    full_in = h * (a.num_heads * a.qk_head_dim * (2 if a.gated_output else 1) + a.num_kv_heads * 2 * a.qk_head_dim)
    full_out = a.num_heads * a.v_head_dim * h
    n_full = m.num_layers - n_lin
    mean_in = (n_full * full_in + n_lin * lin.in_proj_params(h)) / m.num_layers
    mean_out = (n_full * full_out + n_lin * lin.out_proj_params(h)) / m.num_layers
    return mean_in, mean_out


def _full_attention(plan: Plan, queries: float, seqs: float, context: float, share: float, name: str) -> Op:
    """GQA of ``queries`` tokens over ``context`` cached tokens each, the cache read once per sequence."""
    a, g, ks = plan.model.attention, plan.tp, plan.kv_shards
    kv_w = a.num_kv_heads * (a.qk_head_dim + a.v_head_dim)
    head_dims = a.num_heads * (a.qk_head_dim + a.v_head_dim)
    return new_op(
        name,
        OpClass.ATTENTION,
        Stream.ATTENTION,
        2.0 * queries * head_dims * context / g * share,
        (seqs * context * kv_w * plan.kv_bytes / ks + queries * head_dims * ACT_BYTES / g) * share,
    )


def _delta_rule(plan: Plan, queries: float, seqs: float, share: float, prompt: bool, name: str) -> Op:
    """The convolution and the delta rule of ``queries`` tokens of ``seqs`` sequences: the state is read and
    written once per sequence (a decode step, or a prompt in chunks)."""
    lin = plan.model.linear
    assert lin is not None
    shards = min(plan.tp, lin.value_heads)
    flops = lin.recurrence_flops() + 2.0 * lin.conv_dim * lin.conv_kernel
    if prompt:  # within a chunk every token attends to the ones before it
        flops += 2.0 * lin.value_heads * CHUNK * (lin.key_head_dim + lin.value_head_dim)
    state = seqs * 2 * lin.state_elems() * STATE_BYTES
    io = queries * (lin.conv_dim + 2 * lin.value_heads * lin.value_head_dim) * ACT_BYTES
    return new_op(
        name, OpClass.ATTENTION, Stream.ATTENTION, queries * flops / shards * share, (state + io) / shards * share
    )


def hybrid_attention_ops(plan: Plan, share: float) -> list[Op]:
    """The attention half of a mean Qwen3-Next layer for ``share`` of the die's batch."""
    m = plan.model
    lin = m.linear
    assert lin is not None
    h, g, s = m.hidden, plan.tp, Stream.ATTENTION
    lin_share = len(lin.layer_ids) / m.num_layers
    full_share = 1.0 - lin_share
    tokens = plan.tokens_per_die * share
    w_in, w_out = _projection_weights(m)
    ops = [gemm_op("attn_in_proj", s, tokens / g, w_in, plan, tokens * h * ACT_BYTES, weight_shards=g)]
    if plan.decodes:
        decode, seqs = plan.decode_tokens_per_die * share, plan.seqs_per_die * share
        ops += [
            _full_attention(plan, decode, seqs, plan.kv_len, full_share, "attention_core"),
            _delta_rule(plan, decode, seqs, lin_share, False, "gated_deltanet"),
        ]
        chunk, prompt = plan.chunk_tokens_per_die * share, plan.deployment.input_len
        if chunk > 0:
            chunk_seqs = chunk / max(prompt, 1)
            ops += [
                _full_attention(plan, chunk, chunk_seqs, (prompt + 1) / 2, full_share, "chunk_attention"),
                _delta_rule(plan, chunk, chunk_seqs, lin_share, True, "chunk_gated_deltanet"),
            ]
    else:
        cached, computed = plan.cached_len, plan.kv_len - plan.cached_len
        seqs = tokens / max(computed, 1.0)
        ops += [
            _full_attention(plan, tokens, seqs, cached + (computed + 1) / 2, full_share, "flash_attention"),
            _delta_rule(plan, tokens, seqs, lin_share, True, "gated_deltanet"),
        ]
    out_io = 2 * tokens * h * ACT_BYTES
    return ops + [
        gemm_op("o_proj", s, tokens / g, w_out, plan, out_io, weight_shards=g),
        *tp_collective(plan, "all_reduce", g, tokens * h * ACT_BYTES, s, "attn_all_reduce"),
    ]
