"""The model as the cost model sees it: attention (MLA, MLA with DeepSeek Sparse Attention, GQA), MoE and
dense FFN shapes, exact parameter counts and KV-cache bytes. Built from a config.json by ``models``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cloudmatrix.catalog.compressed_attention import CompressedAttentionSpec
from cloudmatrix.catalog.linear_attention import LinearAttentionSpec

STATE_BYTES = 2.0  # linear-attention state held in BF16, the model's dtype (assumed: vLLM's default)

INDEXER_SCALE_BYTES = 4  # one FP32 scale per cached indexer key (vLLM, SGLang and TRT-LLM caches)


@dataclass(frozen=True, kw_only=True)
class IndexerSpec:
    """DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2-Exp report §2.1): ``num_heads`` small
    heads of ``head_dim`` score every cached token (ReLU(q·k) weighted per head, in FP8), and the query
    attends only to the ``topk`` best. ``own_layers`` layers run their own indexer; the others reuse the
    selection of the layer before (configs that share indexers say so)."""

    num_heads: int
    head_dim: int
    topk: int
    own_layers: int

    def params(self, hidden: int, q_lora_rank: int | None) -> int:
        """One indexer: query up-projection from the query latent, a key projection (no head axis) with its
        LayerNorm, and the per-head weights projection."""
        q_in = q_lora_rank or hidden
        return (
            q_in * self.num_heads * self.head_dim + hidden * self.head_dim + 2 * self.head_dim + hidden * self.num_heads
        )

    @property
    def key_bytes(self) -> int:
        """Cached bytes per token per indexer layer: ``head_dim`` 1-byte keys (FP8, or INT8 where the chip has
        no FP8) and one FP32 scale, whatever the KV format of the latent."""
        return int(self.key_bytes_at(1.0))

    def key_bytes_at(self, element_bytes: float) -> float:
        """Bytes of one key of ``head_dim`` values of ``element_bytes`` each, with an FP32 scale where they are
        8-bit (a 16-bit key carries none)."""
        return self.head_dim * element_bytes + (INDEXER_SCALE_BYTES if element_bytes < 2 else 0.0)


@dataclass(frozen=True, kw_only=True)
class AttentionSpec:
    kind: str  # "mla", "gqa" or "csa" (DeepSeek-V4's compressed attention: see ``ModelSpec.compressed``)
    num_heads: int
    num_kv_heads: int
    qk_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int = 0
    bias: bool = False
    indexer: IndexerSpec | None = None  # DeepSeek Sparse Attention (MLA only)
    gated_output: bool = False  # GQA whose query projection also yields a per-head output gate (Qwen3-Next)

    def attended(self, context: float) -> float:
        """Tokens a query attends to: the whole context, or at most top-k with sparse attention."""
        return context if self.indexer is None else min(context, float(self.indexer.topk))

    @property
    def qk_nope_head_dim(self) -> int:
        return self.qk_head_dim - self.qk_rope_head_dim

    def kv_elems_per_token(self) -> int:
        """Cached elements per token per layer: MLA keeps the latent + rope key; GQA keeps K and V."""
        if self.kind == "mla":
            assert self.kv_lora_rank is not None
            return self.kv_lora_rank + self.qk_rope_head_dim
        if self.kind == "csa":  # one shared K=V entry per cached position
            return self.qk_head_dim
        return self.num_kv_heads * (self.qk_head_dim + self.v_head_dim)


@dataclass(frozen=True, kw_only=True)
class MoeSpec:
    num_routed: int
    num_shared: int
    top_k: int  # FFN experts per token (with zero-computation experts: the expected number)
    intermediate: int
    zero_experts: int = 0  # zero-computation (identity) experts: no weights, no FLOPs, a router column each
    router_top_k: int | None = None  # slots the router fills, identity experts included (None: top_k)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    id: str
    model_type: str
    hidden: int
    num_layers: int
    vocab: int
    tied_embeddings: bool
    attention: AttentionSpec
    dense_intermediate: int | None
    moe: MoeSpec | None
    moe_layer_ids: tuple[int, ...]
    sliding_window: int | None
    sliding_layer_ids: tuple[int, ...]
    mtp_layers: int
    compressed: CompressedAttentionSpec | None = None  # DeepSeek-V4's compressed attention
    linear: LinearAttentionSpec | None = None  # Qwen3-Next's Gated DeltaNet layers (the rest are full attention)
    source: str = ""
    max_context: int | None = None  # prompt + output tokens the model takes (config's max_position_embeddings)
    checkpoint_format: str | None = None  # the weights' format a checkpoint's quantization_config declares

    # ---- shapes -------------------------------------------------------------------------------------
    # kept in the instance once read (the cost model reads the layer counts about 17 times per estimate);
    # equality and hashing see only the fields
    @cached_property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_ids)

    @cached_property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    def mla_projection_params(self) -> tuple[int, int, int]:
        """MLA projections as (down, query up, KV up). The down-projections to the query and KV latents have
        no head axis, so a TP group replicates them; the up-projections are per head."""
        a, h = self.attention, self.hidden
        assert a.kind == "mla" and a.kv_lora_rank is not None
        down = h * ((a.q_lora_rank or 0) + a.kv_lora_rank + a.qk_rope_head_dim)
        q_up = (a.q_lora_rank or h) * a.num_heads * a.qk_head_dim
        return down, q_up, a.kv_lora_rank * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim)

    def attention_params(self, tp: int = 1) -> float:
        """Weights of one attention block on one die of a ``tp``-die TP group (projections; norms are in
        ``norm_params``). Heads split over the group; MLA's down-projections and GQA's K/V heads beyond
        one per die are replicated."""
        a, h = self.attention, self.hidden
        if self.compressed is not None:
            c = self.compressed
            return c.shared_params(h) + c.mean_compressor_params(h) + c.head_split_params(h) / tp
        if a.kind == "mla":
            down, q_up, kv_up = self.mla_projection_params()
            return down + self.indexer_params() + (q_up + kv_up + a.num_heads * a.v_head_dim * h) / tp
        q = h * a.num_heads * a.qk_head_dim * (2 if a.gated_output else 1)
        kv = h * a.num_kv_heads * (a.qk_head_dim + a.v_head_dim)
        o = a.num_heads * a.v_head_dim * h
        bias = (a.num_heads * a.qk_head_dim + a.num_kv_heads * (a.qk_head_dim + a.v_head_dim) + h) if a.bias else 0
        full = (q + o + bias) / tp + kv / min(tp, a.num_kv_heads)
        if self.linear is None:
            return full
        n_lin = len(self.linear.layer_ids)  # linear layers split every weight by head
        return ((self.num_layers - n_lin) * full + n_lin * self.linear.layer_params(h) / tp) / self.num_layers

    def indexer_params(self) -> float:
        """The sparse-attention indexer's weights per layer, averaged over the layers (layers that share the
        previous one's selection have none). A TP group replicates them (no head split of the key path)."""
        ix = self.attention.indexer
        if ix is None:
            return 0.0
        return ix.params(self.hidden, self.attention.q_lora_rank) * ix.own_layers / self.num_layers

    def norm_params(self) -> int:
        if self.compressed is not None:
            return self.compressed.norm_params(self.hidden)
        a = self.attention
        extra = (a.q_lora_rank or 0) + (a.kv_lora_rank or 0) if a.kind == "mla" else 0
        return 2 * self.hidden + extra

    def expert_params(self) -> int:
        """One routed (or shared) expert: gated FFN, three matrices."""
        assert self.moe is not None
        return 3 * self.hidden * self.moe.intermediate

    def dense_ffn_params(self) -> int:
        assert self.dense_intermediate is not None
        return 3 * self.hidden * self.dense_intermediate

    def router_params(self) -> int:
        """The router's GEMM: one column per expert, zero-computation experts included."""
        return self.hidden * (self.moe.num_routed + self.moe.zero_experts) if self.moe else 0

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    def moe_layer_params(self, experts: int) -> int:
        expert = experts * self.expert_params() if experts else 0
        return round(self.attention_params()) + self.norm_params() + self.router_params() + expert

    def dense_layer_params(self) -> int:
        return round(self.attention_params()) + self.norm_params() + self.dense_ffn_params()

    def mtp_layer_params(self) -> int:
        """A DeepSeek MTP block: one decoder layer + eh_proj (2h → h) + two norms; shares embedding/head."""
        experts = self.moe.num_routed + self.moe.num_shared if self.moe else 0
        body = self.moe_layer_params(experts) if self.moe else self.dense_layer_params()
        return body + 2 * self.hidden * self.hidden + 2 * self.hidden

    # ---- totals ---------------------------------------------------------------------------------------
    def total_params(self) -> int:
        """Main-model parameters (MTP layers excluded, as model cards count them)."""
        experts = self.moe.num_routed + self.moe.num_shared if self.moe else 0
        dense = self.num_dense_layers * self.dense_layer_params() if self.num_dense_layers else 0
        layers = self.num_moe_layers * self.moe_layer_params(experts) + dense
        return layers + self.embedding_params() + self.lm_head_params() + self.hidden

    def active_params(self) -> int:
        """Parameters multiplied per token: every dense weight, top-k + shared experts, and the LM head.
        The input embedding is a row lookup, not a matmul, so it is not counted."""
        experts = self.moe.top_k + self.moe.num_shared if self.moe else 0
        dense = self.num_dense_layers * self.dense_layer_params() if self.num_dense_layers else 0
        layers = self.num_moe_layers * self.moe_layer_params(experts) + dense
        head = self.lm_head_params() or self.embedding_params()
        return layers + head + self.hidden

    # ---- KV cache ------------------------------------------------------------------------------------
    @property
    def num_full_attention_layers(self) -> int:
        return self.num_layers - (len(self.linear.layer_ids) if self.linear else 0)

    def linear_state_bytes(self) -> float:
        """Recurrent state and convolution inputs one sequence holds over the linear-attention layers."""
        return 0.0 if self.linear is None else len(self.linear.layer_ids) * self.linear.state_elems() * STATE_BYTES

    def indexer_key_bytes_per_token(self) -> float:
        """The sparse-attention indexer's cached keys per token over all layers (0 without DSA)."""
        ix = self.attention.indexer
        return 0.0 if ix is None else float(ix.key_bytes * ix.own_layers)

    def kv_bytes_per_token(self, dtype_bytes: float = 2.0) -> float:
        """KV bytes per token over all layers at full attention (sliding layers counted in full), the
        indexer's keys included. Compressed attention: the growth per token (its window is per sequence)."""
        if self.compressed is not None:
            return self.compressed.bytes_per_token(dtype_bytes)
        if self.linear is not None:  # the linear layers' state does not grow with the context
            return self.attention.kv_elems_per_token() * self.num_full_attention_layers * dtype_bytes
        latent = self.attention.kv_elems_per_token() * self.num_layers * dtype_bytes
        return latent + self.indexer_key_bytes_per_token()

    def kv_bytes(self, seq_len: int, dtype_bytes: float = 2.0) -> float:
        """KV bytes one sequence of ``seq_len`` tokens holds; sliding-window layers keep only the window."""
        if self.compressed is not None:
            return self.compressed.cache_bytes(seq_len, dtype_bytes)
        if self.linear is not None:
            return self.kv_bytes_per_token(dtype_bytes) * seq_len + self.linear_state_bytes()
        per_layer = self.attention.kv_elems_per_token() * dtype_bytes
        sliding = len(self.sliding_layer_ids)
        window = min(seq_len, self.sliding_window) if self.sliding_window else seq_len
        latent = per_layer * ((self.num_layers - sliding) * seq_len + sliding * window)
        return latent + self.indexer_key_bytes_per_token() * seq_len
