"""Model catalog: Hugging Face ``config.json`` → a frozen ``ModelSpec`` with exact parameter counts,
per-layer shapes and KV-cache size. Supports MLA (DeepSeek-V3/R1, Kimi-K2), MLA with DeepSeek Sparse
Attention (DeepSeek-V3.2, GLM-5) and GQA (Llama, Qwen3, gpt-oss) attention, dense and MoE FFNs, and MTP
layers. A config of an architecture (or with a field) the twin cannot price is refused by name."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from cloudmatrix.catalog.hf_checkpoint import cached_config, checkpoint_format, config_path, hub_cache, looks_like_hf_id
from cloudmatrix.catalog.model_spec import AttentionSpec, IndexerSpec, ModelSpec, MoeSpec
from cloudmatrix.catalog.sourced import DATA_DIR, describe_validation_error, read_yaml
from cloudmatrix.errors import ConfigError, UnknownIdError
from cloudmatrix.inputs import MAX_YAML_BYTES, parse_json, path_exists, read_text, refuse_flag_as_number

MODELS_DIR = DATA_DIR / "models"
__all__ = ["AttentionSpec", "IndexerSpec", "ModelSpec", "MoeSpec", "load_model", "model_ids", "parse_config"]


DIM, LAYERS, HEADS, VOCAB, EXPERTS = 1_000_000, 10_000, 10_000, 100_000_000, 100_000

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
    }
)
# Fields that change the cost in ways the twin does not model: a config with one is refused, not mispriced.
UNPRICED_FIELDS = {
    "compress_ratios": "compressed (multi-rate) sparse attention (DeepSeek-V4)",
    "linear_num_value_heads": "linear attention (Gated DeltaNet) layers",
    "full_attention_interval": "hybrid linear/full attention layers",
    "index_skip_topk_offset": "skipped top-k offsets of a shared indexer",
}


class HFConfig(BaseModel):
    """The config.json fields we read. Unknown fields are allowed (configs carry many we do not need)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_flags_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return refuse_flag_as_number(field.annotation if field else Any, value)

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


def _check_priceable(model_id: str, cfg: HFConfig) -> None:
    """Refuse, by name, what the twin would misprice."""
    extra = cfg.model_extra or {}
    for field, what in UNPRICED_FIELDS.items():
        if field in extra:
            raise ConfigError(f"{model_id}: field {field} ({what}) is not modelled; the twin cannot price it")
    if cfg.architectures and not set(cfg.architectures) & SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"{model_id}: architecture {', '.join(cfg.architectures)} cannot be priced "
            f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))})"
        )
    dsa = [f for f in ("index_n_heads", "index_head_dim", "index_topk") if getattr(cfg, f) is not None]
    if dsa and len(dsa) < 3:
        missing = next(f for f in ("index_n_heads", "index_head_dim", "index_topk") if f not in dsa)
        raise ConfigError(f"{model_id}: sparse-attention config ({dsa[0]} set) lacks field {missing}")
    if dsa and cfg.kv_lora_rank is None:
        raise ConfigError(f"{model_id}: sparse attention (index_* fields) needs MLA: field kv_lora_rank is missing")
    if cfg.indexer_types is not None and len(cfg.indexer_types) != cfg.num_hidden_layers:
        raise ConfigError(
            f"{model_id}: indexer_types has {len(cfg.indexer_types)} entries for {cfg.num_hidden_layers} layers"
        )


def _indexer(cfg: HFConfig) -> IndexerSpec | None:
    if cfg.index_n_heads is None or cfg.index_head_dim is None or cfg.index_topk is None:
        return None
    layers = cfg.num_hidden_layers
    if cfg.indexer_types is not None:
        own = sum(1 for t in cfg.indexer_types if t != "shared")
    elif cfg.index_topk_freq:
        own = -(-layers // cfg.index_topk_freq)
    else:
        own = layers
    return IndexerSpec(num_heads=cfg.index_n_heads, head_dim=cfg.index_head_dim, topk=cfg.index_topk, own_layers=own)


def _spec_from_config(model_id: str, cfg: HFConfig, source: str) -> ModelSpec:
    _check_priceable(model_id, cfg)
    heads = cfg.num_attention_heads
    if cfg.kv_lora_rank is not None:
        missing = [f for f in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim") if getattr(cfg, f) is None]
        if missing:
            raise ConfigError(f"{model_id}: MLA config (kv_lora_rank set) lacks field {missing[0]}")
        rope = cfg.qk_rope_head_dim or 0
        attention = AttentionSpec(
            kind="mla",
            num_heads=heads,
            num_kv_heads=heads,
            qk_head_dim=(cfg.qk_nope_head_dim or 0) + rope,
            v_head_dim=cfg.v_head_dim or 0,
            q_lora_rank=cfg.q_lora_rank,
            kv_lora_rank=cfg.kv_lora_rank,
            qk_rope_head_dim=rope,
            indexer=_indexer(cfg),
        )
    else:
        head_dim = cfg.head_dim or cfg.hidden_size // heads
        kv_heads = cfg.num_key_value_heads or heads
        if heads % kv_heads:
            raise ConfigError(
                f"{model_id}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )
        attention = AttentionSpec(
            kind="gqa",
            num_heads=heads,
            num_kv_heads=kv_heads,
            qk_head_dim=head_dim,
            v_head_dim=head_dim,
            bias=cfg.attention_bias,
        )
    routed = cfg.n_routed_experts or cfg.num_experts or cfg.num_local_experts
    moe = None
    moe_layers: tuple[int, ...] = ()
    if routed:
        if cfg.num_experts_per_tok is None:
            raise ConfigError(f"{model_id}: MoE config lacks field num_experts_per_tok")
        if cfg.num_experts_per_tok > routed:
            raise ConfigError(
                f"{model_id}: num_experts_per_tok {cfg.num_experts_per_tok} exceeds the {routed} routed experts"
            )
        inter = cfg.moe_intermediate_size or cfg.intermediate_size
        if inter is None:
            raise ConfigError(f"{model_id}: MoE config lacks field moe_intermediate_size")
        moe = MoeSpec(
            num_routed=routed, num_shared=cfg.n_shared_experts or 0, top_k=cfg.num_experts_per_tok, intermediate=inter
        )
        dense = set(range(cfg.first_k_dense_replace)) | set(cfg.mlp_only_layers)
        moe_layers = tuple(i for i in range(cfg.num_hidden_layers) if i not in dense)
    dense_inter = cfg.intermediate_size
    if len(moe_layers) < cfg.num_hidden_layers and dense_inter is None:
        raise ConfigError(f"{model_id}: dense layers need field intermediate_size")
    sliding = tuple(i for i, t in enumerate(cfg.layer_types or []) if t == "sliding_attention")
    return ModelSpec(
        id=model_id,
        model_type=cfg.model_type,
        hidden=cfg.hidden_size,
        num_layers=cfg.num_hidden_layers,
        vocab=cfg.vocab_size,
        tied_embeddings=cfg.tie_word_embeddings,
        attention=attention,
        dense_intermediate=dense_inter,
        moe=moe,
        moe_layer_ids=moe_layers,
        sliding_window=cfg.sliding_window if sliding else None,
        sliding_layer_ids=sliding,
        mtp_layers=cfg.num_nextn_predict_layers,
        source=source,
        max_context=_max_context(cfg),
    )


def _max_context(cfg: HFConfig) -> int | None:
    """The context the model was trained to (``max_position_embeddings``), where its config states one."""
    n = getattr(cfg, "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def parse_config(model_id: str, data: Any, source: str = "") -> ModelSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{model_id}: config must be a JSON object, got {type(data).__name__}")
    try:
        cfg = HFConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{model_id}: {describe_validation_error(e)}") from None
    return _spec_from_config(model_id, cfg, source)


@cache
def model_index() -> dict[str, dict[str, Any]]:
    return dict(read_yaml(MODELS_DIR / "index.yaml"))


def model_ids() -> list[str]:
    return sorted(model_index())


def hf_id_of(model_id: str) -> str | None:
    """The Hugging Face repository a shipped model's config comes from (None for a model not in the catalog)."""
    entry = model_index().get(model_id)
    return None if entry is None else entry.get("hf_id")


@cache
def load_model(id_or_path: str) -> ModelSpec:
    """A catalog id (``deepseek-r1``) first; then a path to a config.json or to a model directory; then a
    Hugging Face id in the local hub cache (never downloaded); last a Hugging Face id the catalog ships
    (``deepseek-ai/DeepSeek-R1``). A config read from outside the catalog carries its ``checkpoint_format``
    (from ``quantization_config``); the shipped configs describe architectures, whose precision the
    deployment chooses."""
    index = model_index()
    if id_or_path in index:
        return _catalog_model(id_or_path)
    path = config_path(id_or_path)
    if path_exists(path, "model config") or (path.suffix == ".json" and not looks_like_hf_id(id_or_path)):
        return _checkpoint_model(path.name if path.name != "config.json" else path.parent.name, path, str(path))
    if looks_like_hf_id(id_or_path):
        cached = cached_config(id_or_path)
        if cached is not None:
            return _checkpoint_model(id_or_path, cached, f"{id_or_path} (Hugging Face cache: {cached})")
        by_hf = {entry.get("hf_id"): mid for mid, entry in index.items()}
        if id_or_path in by_hf:
            return _catalog_model(by_hf[id_or_path])
        raise ConfigError(
            f"model '{id_or_path}': not a catalog id, a path, or a model in the Hugging Face cache at "
            f"{hub_cache()} (nothing is downloaded; `huggingface-cli download {id_or_path} config.json` "
            "fetches its config, or set HF_HUB_CACHE)"
        )
    raise UnknownIdError("model", id_or_path, list(index) + ["<path to config.json or model dir>", "<ORG/NAME>"])


def _catalog_model(model_id: str) -> ModelSpec:
    entry = model_index()[model_id]
    path = MODELS_DIR / entry["file"]
    data = parse_json(read_text(path, "model config", MAX_YAML_BYTES), str(path))
    return parse_config(model_id, data, entry["source"])


def _checkpoint_model(model_id: str, path: Path, source: str) -> ModelSpec:
    data = parse_json(read_text(path, "model config", MAX_YAML_BYTES), str(path))
    spec = parse_config(model_id, data, source)
    return replace(spec, checkpoint_format=checkpoint_format(data))


PRECISION_OF_FORMAT = {"fp8": "fp8", "int8": "int8", "fp4": "fp4", "bf16": "bf16"}  # formats the twin prices


def precision_note(model: ModelSpec, precision: str) -> str | None:
    """A warning when the deployment's weight precision is not the checkpoint's (None when they agree or the
    checkpoint does not say)."""
    fmt = model.checkpoint_format
    if fmt is None or PRECISION_OF_FORMAT.get(fmt) == precision:
        return None
    return (
        f"warning: {model.id}'s checkpoint stores {fmt} weights (quantization_config), but the deployment prices "
        f"{precision}; give --precision {PRECISION_OF_FORMAT.get(fmt, fmt)} (or the scenario's precision) to match"
    )
