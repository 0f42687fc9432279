"""The architectures the model catalog prices and the Hugging Face ``config.json`` fields it refuses by name
(``catalog/hf_schema.py`` has the fields it reads; ``catalog/models.py`` turns them into a ``ModelSpec``)."""

from __future__ import annotations

# Architectures whose every cost-relevant field the twin reads; configs without ``architectures`` are priced
# from their fields alone.
SUPPORTED_ARCHITECTURES = frozenset(
    {
        "DeepseekV3ForCausalLM",
        "DeepseekV32ForCausalLM",
        "GlmMoeDsaForCausalLM",
        "Qwen3MoeForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen2ForCausalLM",
        "LlamaForCausalLM",
        "MixtralForCausalLM",
        "GptOssForCausalLM",
        "DeepseekV4ForCausalLM",
        "MiniMaxM2ForCausalLM",
        "Qwen3NextForCausalLM",
        "LongcatFlashForCausalLM",
    }
)
# Fields that change the cost in ways the twin does not model: a config with one is refused, not mispriced.
UNPRICED_FIELDS = {
    "linear_attn_config": "Kimi Delta Attention (KDA) linear layers",
    "index_skip_topk_offset": "skipped top-k offsets of a shared indexer",
    "kv_source_layer_ids": "KV caches shared across layers",
    "index_source_layer_ids": "indexer selections shared across layers",
    "engram_layer_ids": "Engram n-gram memory layers",
    "dspark_block_size": "block draft (DSpark) speculation heads",
    "zero_expert_num": "zero-computation (identity) experts",
}
# DeepSeek-V4's compressed attention: these fields are priced only together (``compress_ratios`` names it)
V4_FIELDS = ("o_groups", "o_lora_rank", "q_lora_rank", "head_dim", "index_n_heads", "index_head_dim", "index_topk")
