"""The fields of a Hugging Face ``config.json`` the model catalog reads, with physical bounds (pydantic: imported
only where a config is validated, not where a shipped model comes from the object cache)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from cloudmatrix.catalog.strict import StrictModel

DIM, LAYERS, HEADS, VOCAB, EXPERTS = 1_000_000, 10_000, 10_000, 100_000_000, 100_000


class HFConfig(StrictModel):
    """The config.json fields we read. Unknown fields are allowed (configs carry many we do not need)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model_type: str = "unknown"
    # Upper bounds are physical (today's largest models are 10-100x below them): a config beyond them is a
    # typo or hostile, and would allocate per-layer or per-expert tables without end.
    hidden_size: int = Field(gt=0, le=DIM)
    num_hidden_layers: int = Field(gt=0, le=LAYERS)
    num_attention_heads: int = Field(gt=0, le=HEADS)
    num_key_value_heads: int | None = Field(default=None, gt=0, le=HEADS)
    head_dim: int | None = Field(default=None, gt=0, le=DIM)
    vocab_size: int = Field(gt=0, le=VOCAB)
    intermediate_size: int | None = Field(default=None, gt=0, le=DIM * 8)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    # MLA (DeepSeek-V3 family)
    q_lora_rank: int | None = Field(default=None, gt=0, le=DIM)
    kv_lora_rank: int | None = Field(default=None, gt=0, le=DIM)
    qk_nope_head_dim: int | None = Field(default=None, ge=0, le=DIM)
    qk_rope_head_dim: int | None = Field(default=None, ge=0, le=DIM)
    v_head_dim: int | None = Field(default=None, gt=0, le=DIM)
    # MoE, under the names the different families use
    n_routed_experts: int | None = Field(default=None, gt=0, le=EXPERTS)
    num_experts: int | None = Field(default=None, gt=0, le=EXPERTS)
    num_local_experts: int | None = Field(default=None, gt=0, le=EXPERTS)
    n_shared_experts: int | None = Field(default=None, ge=0, le=EXPERTS)
    num_experts_per_tok: int | None = Field(default=None, gt=0, le=EXPERTS)
    moe_intermediate_size: int | None = Field(default=None, gt=0, le=DIM * 8)
    first_k_dense_replace: int = Field(default=0, ge=0, le=LAYERS)
    # LongCat's zero-computation experts, as catalog/zero_experts.py translates them
    zero_experts: int = Field(default=0, ge=0, le=EXPERTS)
    router_top_k: int | None = Field(default=None, gt=0, le=EXPERTS)
    mlp_only_layers: list[int] = Field(default_factory=list, max_length=LAYERS)
    # sliding-window attention (gpt-oss)
    sliding_window: int | None = Field(default=None, gt=0)
    layer_types: list[str] | None = Field(default=None, max_length=LAYERS)
    num_nextn_predict_layers: int = Field(default=0, ge=0, le=16)
    architectures: list[str] | None = Field(default=None, max_length=16)
    # DeepSeek Sparse Attention: the lightning indexer and its top-k (DeepSeek-V3.2, GLM-5)
    index_n_heads: int | None = Field(default=None, gt=0, le=HEADS)
    index_head_dim: int | None = Field(default=None, gt=0, le=DIM)
    index_topk: int | None = Field(default=None, gt=0, le=10_000_000)
    index_topk_freq: int | None = Field(default=None, gt=0, le=LAYERS)  # one indexer per this many layers
    indexer_types: list[str] | None = Field(default=None, max_length=LAYERS)  # per layer: "full" or "shared"
    # DeepSeek-V4: compressed sparse attention, grouped output projection, hyper-connections
    compress_ratios: list[int] | None = Field(default=None, max_length=LAYERS + 16)
    o_groups: int | None = Field(default=None, gt=0, le=HEADS)
    o_lora_rank: int | None = Field(default=None, gt=0, le=DIM)
    hc_mult: int = Field(default=1, gt=0, le=64)
    # Qwen3-Next: Gated DeltaNet linear-attention layers between gated full-attention layers
    linear_num_value_heads: int | None = Field(default=None, gt=0, le=HEADS)
    linear_num_key_heads: int | None = Field(default=None, gt=0, le=HEADS)
    linear_key_head_dim: int | None = Field(default=None, gt=0, le=DIM)
    linear_value_head_dim: int | None = Field(default=None, gt=0, le=DIM)
    linear_conv_kernel_dim: int | None = Field(default=None, gt=0, le=64)
    full_attention_interval: int | None = Field(default=None, gt=0, le=LAYERS)
    attn_output_gate: bool = False  # Qwen3.5 names it; Qwen3-Next gates without naming it
    shared_expert_intermediate_size: int | None = Field(default=None, gt=0, le=DIM * 8)
