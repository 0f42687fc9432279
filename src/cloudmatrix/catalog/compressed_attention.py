"""DeepSeek-V4's hybrid attention as the cost model sees it (V4 technical report §2.2-2.3; shapes as in
Hugging Face transformers' ``deepseek_v4`` model, which loads the published checkpoints).

Every layer is shared-KV multi-query attention (one ``head_dim``-wide entry per cached position serves as
both key and value) with a sliding window of the last ``window`` tokens. On top of the window, a layer with
``compress_ratios`` m > 0 keeps one compressed entry per m tokens (a learned softmax pool of the tokens'
projected KV):

- CSA (compressed sparse attention, m = 4, overlapping windows of 2m): a lightning indexer of
  ``index_heads`` × ``index_head_dim`` scores every compressed entry and the query attends to the
  ``index_topk`` best;
- HCA (heavily compressed attention, m = 128): the query attends to every compressed entry.

The output projection is grouped and low-rank (``o_groups`` groups of heads, each to ``o_lora_rank``, then
one mix to the hidden size), and the residual stream is ``hc_mult`` streams wide, mixed in and out of each
sub-layer by manifold-constrained hyper-connections (mHC)."""

from __future__ import annotations

from dataclasses import dataclass

CSA_RATIO, HCA_RATIO = 4, 128  # the two compression rates the V4 configs use (report §2.3.1, §2.3.2)
INDEX_SCALE_BYTES = 4  # one FP32 scale per cached indexer key, as DeepSeek Sparse Attention's cache keeps


@dataclass(frozen=True, kw_only=True)
class CompressedAttentionSpec:
    ratios: tuple[int, ...]  # per main layer: 0 sliding window only, 4 CSA, 128 HCA
    window: int
    num_heads: int
    head_dim: int
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    index_heads: int
    index_head_dim: int
    index_topk: int
    hc_mult: int

    @property
    def csa_layers(self) -> int:
        return sum(1 for r in self.ratios if r == CSA_RATIO)

    @property
    def hca_layers(self) -> int:
        return sum(1 for r in self.ratios if r == HCA_RATIO)

    # ---- weights -------------------------------------------------------------------------------------
    def head_split_params(self, hidden: int) -> int:
        """Weights with a head axis, which a TP group splits: the query up-projection, the grouped output
        projection and the output mix (whose inputs are the groups' outputs), and the attention sinks."""
        heads_dim = self.num_heads * self.head_dim
        return (
            self.q_lora_rank * heads_dim
            + heads_dim * self.o_lora_rank
            + self.o_groups * self.o_lora_rank * hidden
            + self.num_heads
        )

    def hc_params(self, hidden: int) -> int:
        """The layer's two mHC mappings (attention and FFN sites): (2 + n) · n mixing logits from the n
        streams, each with a bias, and three scales."""
        mix = (2 + self.hc_mult) * self.hc_mult
        return 2 * (mix * self.hc_mult * hidden + mix + 3)

    def shared_params(self, hidden: int) -> int:
        """Weights without a head axis, replicated by a TP group: the query down-projection, the one KV
        projection and the mHC mappings."""
        return hidden * self.q_lora_rank + hidden * self.head_dim + self.hc_params(hidden)

    def compressor_params(self, hidden: int, ratio: int) -> int:
        """A layer's compressor (KV and gate projections, position bias, norm) and, for CSA, its indexer
        (the same pool at ``index_head_dim``, the query up-projection from the query latent and the per-head
        weights). CSA's overlapping windows project to twice the width."""
        if ratio == 0:
            return 0
        coff = 2 if ratio == CSA_RATIO else 1
        pool = 2 * hidden * coff * self.head_dim + ratio * coff * self.head_dim + self.head_dim
        if ratio != CSA_RATIO:
            return pool
        c = self.index_head_dim
        indexer = (
            4 * hidden * c + ratio * 2 * c + c + self.q_lora_rank * self.index_heads * c + hidden * self.index_heads
        )
        return pool + indexer

    def mean_compressor_params(self, hidden: int) -> float:
        return sum(self.compressor_params(hidden, r) for r in self.ratios) / len(self.ratios)

    def norm_params(self, hidden: int) -> int:
        return 2 * hidden + self.q_lora_rank + self.head_dim

    # ---- cache ---------------------------------------------------------------------------------------
    def cache_bytes(self, seq_len: float, dtype_bytes: float) -> float:
        """Bytes one sequence of ``seq_len`` tokens holds over all layers: every layer's window, one entry
        per m tokens of each compressed layer, and CSA's indexer keys (1-byte values and an FP32 scale)."""
        entry = self.head_dim * dtype_bytes
        window = len(self.ratios) * min(seq_len, self.window) * entry
        pooled = sum(seq_len // r for r in self.ratios if r) * entry
        keys = self.csa_layers * (seq_len // CSA_RATIO) * (self.index_head_dim + INDEX_SCALE_BYTES)
        return window + pooled + keys

    def bytes_per_token(self, dtype_bytes: float) -> float:
        """Cache growth per token over all layers (the window is a per-sequence constant)."""
        pooled = sum(1.0 / r for r in self.ratios if r) * self.head_dim * dtype_bytes
        return pooled + self.csa_layers * (self.index_head_dim + INDEX_SCALE_BYTES) / CSA_RATIO

    def attended(self, ratio: int, context: float) -> float:
        """Entries a query of a layer attends to at ``context`` tokens: the window, plus every HCA entry or
        CSA's top-k of its entries."""
        window = min(context, float(self.window))
        if ratio == 0:
            return window
        pooled = context / ratio
        return window + (min(pooled, float(self.index_topk)) if ratio == CSA_RATIO else pooled)
