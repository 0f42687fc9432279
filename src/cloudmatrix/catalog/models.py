"""Model catalog: Hugging Face ``config.json`` → a frozen ``ModelSpec`` with exact parameter counts,
per-layer shapes and KV-cache size. Supports MLA (DeepSeek-V3/R1, Kimi-K2), MLA with DeepSeek Sparse
Attention (DeepSeek-V3.2, GLM-5), GQA (Llama, Qwen3, gpt-oss, MiniMax-M2), DeepSeek-V4's compressed attention
and Qwen3-Next's hybrid linear attention, dense and MoE FFNs, MTP layers, and the language model of a known
multimodal wrapper (Kimi-K2.5). A config of an architecture (or with a field) the twin cannot price is
refused by name."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudmatrix.catalog.compressed_attention import CSA_RATIO, HCA_RATIO, CompressedAttentionSpec
from cloudmatrix.catalog.hf_checkpoint import cached_config, checkpoint_format, config_path, hub_cache, looks_like_hf_id
from cloudmatrix.catalog.hf_config import SUPPORTED_ARCHITECTURES, UNPRICED_FIELDS, V4_FIELDS
from cloudmatrix.catalog.linear_attention import LinearAttentionSpec
from cloudmatrix.catalog.model_spec import AttentionSpec, IndexerSpec, ModelSpec, MoeSpec
from cloudmatrix.catalog.object_cache import cached_object
from cloudmatrix.catalog.sourced import DATA_DIR, describe_validation_error, read_yaml
from cloudmatrix.catalog.zero_experts import is_longcat, with_expected_ffn_experts
from cloudmatrix.catalog.zero_experts import translate as translate_longcat
from cloudmatrix.errors import ConfigError, UnknownIdError
from cloudmatrix.inputs import MAX_YAML_BYTES, parse_json, path_exists, read_text

if TYPE_CHECKING:
    from cloudmatrix.catalog.hf_schema import HFConfig

MODELS_DIR = DATA_DIR / "models"
__all__ = ["AttentionSpec", "IndexerSpec", "ModelSpec", "MoeSpec", "load_model", "model_ids", "parse_config"]


LINEAR_FIELDS = ("linear_num_key_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim")


def _linear(model_id: str, cfg: HFConfig) -> LinearAttentionSpec | None:
    """Gated DeltaNet layers: those ``layer_types`` calls linear_attention, else all but every
    ``full_attention_interval``-th layer."""
    if cfg.linear_num_value_heads is None and cfg.full_attention_interval is None:
        return None
    missing = next((f for f in ("linear_num_value_heads", *LINEAR_FIELDS) if getattr(cfg, f) is None), None)
    if missing:
        raise ConfigError(f"{model_id}: linear attention (Gated DeltaNet) config lacks field {missing}")
    if cfg.layer_types is not None:
        if len(cfg.layer_types) != cfg.num_hidden_layers:
            raise ConfigError(f"{model_id}: layer_types has {len(cfg.layer_types)} entries for {cfg.num_hidden_layers}")
        ids = tuple(i for i, t in enumerate(cfg.layer_types) if t == "linear_attention")
    elif cfg.full_attention_interval is not None:
        ids = tuple(i for i in range(cfg.num_hidden_layers) if (i + 1) % cfg.full_attention_interval)
    else:
        raise ConfigError(f"{model_id}: linear attention config lacks field full_attention_interval (or layer_types)")
    assert cfg.linear_num_value_heads and cfg.linear_num_key_heads and cfg.linear_key_head_dim
    assert cfg.linear_value_head_dim and cfg.linear_conv_kernel_dim
    return LinearAttentionSpec(
        layer_ids=ids,
        key_heads=cfg.linear_num_key_heads,
        value_heads=cfg.linear_num_value_heads,
        key_head_dim=cfg.linear_key_head_dim,
        value_head_dim=cfg.linear_value_head_dim,
        conv_kernel=cfg.linear_conv_kernel_dim,
    )


def _shared_experts(model_id: str, cfg: HFConfig, inter: int) -> int:
    """DeepSeek names a count of shared experts; Qwen's MoE names one shared expert by its width."""
    width = cfg.shared_expert_intermediate_size
    if width is None:
        return cfg.n_shared_experts or 0
    if width != inter:
        raise ConfigError(
            f"{model_id}: shared_expert_intermediate_size {width} differs from the routed experts' {inter}; "
            "a shared expert of its own width is not modelled"
        )
    return 1


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
    if cfg.compress_ratios is not None:
        check_compressed(model_id, cfg)
        return
    if cfg.hc_mult != 1:
        raise ConfigError(
            f"{model_id}: field hc_mult (hyper-connections) is priced only with DeepSeek-V4's compress_ratios"
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


def check_compressed(model_id: str, cfg: HFConfig) -> None:
    """DeepSeek-V4's fields: all present, one ratio per layer (the MTP layers may follow), each 0, 4 or 128."""
    assert cfg.compress_ratios is not None
    missing = next((f for f in V4_FIELDS if getattr(cfg, f) is None), None)
    if missing:
        raise ConfigError(f"{model_id}: compressed attention (compress_ratios set) lacks field {missing}")
    if cfg.sliding_window is None:
        raise ConfigError(f"{model_id}: compressed attention (compress_ratios set) lacks field sliding_window")
    if not cfg.num_hidden_layers <= len(cfg.compress_ratios) <= cfg.num_hidden_layers + cfg.num_nextn_predict_layers:
        raise ConfigError(
            f"{model_id}: compress_ratios has {len(cfg.compress_ratios)} entries for "
            f"{cfg.num_hidden_layers} layers and {cfg.num_nextn_predict_layers} MTP layers"
        )
    bad = next((r for r in cfg.compress_ratios if r not in (0, CSA_RATIO, HCA_RATIO)), None)
    if bad is not None:
        raise ConfigError(
            f"{model_id}: compress_ratios value {bad} is not modelled (expected 0, {CSA_RATIO} or {HCA_RATIO})"
        )
    if cfg.num_key_value_heads not in (None, 1):
        raise ConfigError(
            f"{model_id}: compressed attention shares one KV head, got num_key_value_heads {cfg.num_key_value_heads}"
        )
    heads, groups = cfg.num_attention_heads, cfg.o_groups or 1
    if heads % groups:
        raise ConfigError(f"{model_id}: num_attention_heads {heads} is not a multiple of o_groups {groups}")


def _compressed(cfg: HFConfig) -> tuple[AttentionSpec, CompressedAttentionSpec]:
    assert cfg.compress_ratios is not None and cfg.head_dim and cfg.q_lora_rank and cfg.o_groups
    assert cfg.o_lora_rank and cfg.index_n_heads and cfg.index_head_dim and cfg.index_topk and cfg.sliding_window
    spec = CompressedAttentionSpec(
        ratios=tuple(cfg.compress_ratios[: cfg.num_hidden_layers]),
        window=cfg.sliding_window,
        num_heads=cfg.num_attention_heads,
        head_dim=cfg.head_dim,
        q_lora_rank=cfg.q_lora_rank,
        o_groups=cfg.o_groups,
        o_lora_rank=cfg.o_lora_rank,
        index_heads=cfg.index_n_heads,
        index_head_dim=cfg.index_head_dim,
        index_topk=cfg.index_topk,
        hc_mult=cfg.hc_mult,
    )
    attention = AttentionSpec(
        kind="csa",
        num_heads=cfg.num_attention_heads,
        num_kv_heads=1,
        qk_head_dim=cfg.head_dim,
        v_head_dim=cfg.head_dim,
        q_lora_rank=cfg.q_lora_rank,
        qk_rope_head_dim=cfg.qk_rope_head_dim or 0,
    )
    return attention, spec


def _spec_from_config(model_id: str, cfg: HFConfig, source: str) -> ModelSpec:
    _check_priceable(model_id, cfg)
    heads = cfg.num_attention_heads
    compressed = None
    if cfg.compress_ratios is not None:
        attention, compressed = _compressed(cfg)
    elif cfg.kv_lora_rank is not None:
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
            gated_output=cfg.attn_output_gate or cfg.model_type == "qwen3_next",
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
            num_routed=routed,
            num_shared=_shared_experts(model_id, cfg, inter),
            top_k=cfg.num_experts_per_tok,
            intermediate=inter,
            zero_experts=cfg.zero_experts,
            router_top_k=cfg.router_top_k,
        )
        dense = set(range(cfg.first_k_dense_replace)) | set(cfg.mlp_only_layers)
        moe_layers = tuple(i for i in range(cfg.num_hidden_layers) if i not in dense)
    dense_inter = cfg.intermediate_size
    if len(moe_layers) < cfg.num_hidden_layers and dense_inter is None:
        raise ConfigError(f"{model_id}: dense layers need field intermediate_size")
    sliding = tuple(i for i, t in enumerate(cfg.layer_types or []) if t == "sliding_attention")
    if compressed is not None:
        sliding = ()  # every V4 layer's window is part of its compressed attention
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
        compressed=compressed,
        linear=_linear(model_id, cfg) if compressed is None else None,
        source=source,
        max_context=_max_context(cfg),
    )


def _max_context(cfg: HFConfig) -> int | None:
    """The context the model was trained to (``max_position_embeddings``), where its config states one."""
    n = getattr(cfg, "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


# Multimodal wrappers whose language model (``text_config``) the twin prices; their vision towers run only
# for image inputs, which the twin's workloads do not have.
TEXT_WRAPPERS = frozenset({"KimiK25ForConditionalGeneration"})


def _text_model(model_id: str, data: dict[str, Any]) -> Any:
    """The language model of a multimodal wrapper the twin knows; any other wrapper is refused by name."""
    if "text_config" not in data:
        return data
    arch = ", ".join(data.get("architectures") or ["(none)"])
    if not set(data.get("architectures") or []) & TEXT_WRAPPERS:
        raise ConfigError(
            f"{model_id}: field text_config of architecture {arch} (a multimodal wrapper) is not modelled"
        )
    return data["text_config"]


def parse_config(model_id: str, data: Any, source: str = "") -> ModelSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{model_id}: config must be a JSON object, got {type(data).__name__}")
    data = _text_model(model_id, data)
    if not isinstance(data, dict):
        raise ConfigError(f"{model_id}: text_config must be a JSON object, got {type(data).__name__}")
    longcat = is_longcat(data)
    if longcat:
        data = translate_longcat(model_id, data)
    from pydantic import ValidationError  # pydantic only where a config is validated, not for a kept model

    from cloudmatrix.catalog.hf_schema import HFConfig

    try:
        cfg = HFConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{model_id}: {describe_validation_error(e)}") from None
    spec = _spec_from_config(model_id, cfg, source)
    return with_expected_ffn_experts(spec) if longcat and spec.moe and spec.moe.zero_experts else spec


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
    """A shipped model, kept once built from its config (``catalog/object_cache.py``)."""
    entry = model_index()[model_id]
    path = MODELS_DIR / entry["file"]
    text = read_text(path, "model config", MAX_YAML_BYTES)
    key = f"model\0{model_id}\0{entry['source']}\0{text}".encode()
    return cached_object(key, lambda: parse_config(model_id, parse_json(text, str(path)), entry["source"]))


def _checkpoint_model(model_id: str, path: Path, source: str) -> ModelSpec:
    data = parse_json(read_text(path, "model config", MAX_YAML_BYTES), str(path))
    spec = parse_config(model_id, data, source)
    return replace(spec, checkpoint_format=checkpoint_format(data))


# formats the twin prices as the default --precision (int4 weights need an activation format, so a checkpoint
# of int4 weights keeps the default and is warned about)
PRECISION_OF_FORMAT = {"fp8": "fp8", "int8": "int8", "fp4": "fp4", "bf16": "bf16"}


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
