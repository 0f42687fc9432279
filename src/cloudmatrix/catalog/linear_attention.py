"""Hybrid linear attention as the cost model sees it: Qwen3-Next's Gated DeltaNet layers (shapes as in
Hugging Face transformers' ``qwen3_next`` model) between gated full-attention layers.

A Gated DeltaNet layer keeps no KV cache: each sequence carries a recurrent state of ``value_heads`` matrices
of ``key_head_dim`` × ``value_head_dim`` (the delta rule's associative memory) and the last
``conv_kernel`` - 1 inputs of its short causal convolution over the query, key and value channels. Every
decode token reads and rewrites that state; its size does not grow with the context. The full-attention
layers (one every ``full_attention_interval``) are GQA whose query projection also produces a per-head
output gate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class LinearAttentionSpec:
    layer_ids: tuple[int, ...]  # the Gated DeltaNet layers; the others are gated full attention
    key_heads: int
    value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int

    @property
    def conv_dim(self) -> int:
        """Channels of the short convolution: queries and keys of every key head, values of every value head."""
        return 2 * self.key_heads * self.key_head_dim + self.value_heads * self.value_head_dim

    def in_proj_params(self, hidden: int) -> int:
        """Query, key, value and output-gate projections (``in_proj_qkvz``) and the per-value-head decay and
        write-strength projections (``in_proj_ba``)."""
        qkvz = 2 * self.key_heads * self.key_head_dim + 2 * self.value_heads * self.value_head_dim
        return hidden * qkvz + hidden * 2 * self.value_heads

    def out_proj_params(self, hidden: int) -> int:
        return self.value_heads * self.value_head_dim * hidden

    def layer_params(self, hidden: int) -> int:
        """One layer: projections, the convolution, per-head decay parameters (A_log, dt_bias) and the
        gated output norm."""
        small = self.conv_dim * self.conv_kernel + 2 * self.value_heads + self.value_head_dim
        return self.in_proj_params(hidden) + self.out_proj_params(hidden) + small

    def state_elems(self) -> int:
        """Elements one sequence holds per layer: the recurrent state and the convolution's last inputs."""
        return self.value_heads * self.key_head_dim * self.value_head_dim + self.conv_dim * (self.conv_kernel - 1)

    def recurrence_flops(self) -> float:
        """FLOPs per token per layer of the delta rule in its recurrent (decode) form: per value head, the
        state's decay, its read by the key, the rank-one write and its read by the query, each about
        2 · key_head_dim · value_head_dim."""
        return 8.0 * self.value_heads * self.key_head_dim * self.value_head_dim
