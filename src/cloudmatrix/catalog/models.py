"""Model catalog: Hugging Face ``config.json`` → a frozen ``ModelSpec`` with exact parameter counts,
per-layer shapes and KV-cache size. Supports MLA (DeepSeek-V3/R1, Kimi-K2) and GQA (Llama, Qwen3, gpt-oss)
attention, dense and MoE FFNs, and MTP layers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudmatrix.catalog.sourced import DATA_DIR, describe_validation_error, read_yaml
from cloudmatrix.errors import ConfigError, UnknownIdError
from cloudmatrix.inputs import MAX_YAML_BYTES, parse_json, read_text

MODELS_DIR = DATA_DIR / "models"


DIM, LAYERS, HEADS, VOCAB, EXPERTS = 1_000_000, 10_000, 10_000, 100_000_000, 100_000


class HFConfig(BaseModel):
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
    mlp_only_layers: list[int] = Field(default_factory=list, max_length=LAYERS)
    # sliding-window attention (gpt-oss)
    sliding_window: int | None = Field(default=None, gt=0)
    layer_types: list[str] | None = Field(default=None, max_length=LAYERS)
    num_nextn_predict_layers: int = Field(default=0, ge=0, le=16)


@dataclass(frozen=True, kw_only=True)
class AttentionSpec:
    kind: str  # "mla" or "gqa"
    num_heads: int
    num_kv_heads: int
    qk_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int = 0
    bias: bool = False

    @property
    def qk_nope_head_dim(self) -> int:
        return self.qk_head_dim - self.qk_rope_head_dim

    def kv_elems_per_token(self) -> int:
        """Cached elements per token per layer: MLA keeps the latent + rope key; GQA keeps K and V."""
        if self.kind == "mla":
            assert self.kv_lora_rank is not None
            return self.kv_lora_rank + self.qk_rope_head_dim
        return self.num_kv_heads * (self.qk_head_dim + self.v_head_dim)


@dataclass(frozen=True, kw_only=True)
class MoeSpec:
    num_routed: int
    num_shared: int
    top_k: int
    intermediate: int


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
    source: str = ""

    # ---- shapes -------------------------------------------------------------------------------------
    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_ids)

    @property
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
        if a.kind == "mla":
            down, q_up, kv_up = self.mla_projection_params()
            return down + (q_up + kv_up + a.num_heads * a.v_head_dim * h) / tp
        q = h * a.num_heads * a.qk_head_dim
        kv = h * a.num_kv_heads * (a.qk_head_dim + a.v_head_dim)
        o = a.num_heads * a.v_head_dim * h
        bias = (a.num_heads * a.qk_head_dim + a.num_kv_heads * (a.qk_head_dim + a.v_head_dim) + h) if a.bias else 0
        return (q + o + bias) / tp + kv / min(tp, a.num_kv_heads)

    def norm_params(self) -> int:
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
        return self.hidden * self.moe.num_routed if self.moe else 0

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
        layers = self.num_moe_layers * self.moe_layer_params(experts) + self.num_dense_layers * (
            self.dense_layer_params()
        )
        return layers + self.embedding_params() + self.lm_head_params() + self.hidden

    def active_params(self) -> int:
        """Parameters multiplied per token: every dense weight, top-k + shared experts, and the LM head.
        The input embedding is a row lookup, not a matmul, so it is not counted."""
        experts = self.moe.top_k + self.moe.num_shared if self.moe else 0
        layers = self.num_moe_layers * self.moe_layer_params(experts) + self.num_dense_layers * (
            self.dense_layer_params()
        )
        head = self.lm_head_params() or self.embedding_params()
        return layers + head + self.hidden

    # ---- KV cache ------------------------------------------------------------------------------------
    def kv_bytes_per_token(self, dtype_bytes: float = 2.0) -> float:
        """KV bytes per token over all layers at full attention (sliding layers counted in full)."""
        return self.attention.kv_elems_per_token() * self.num_layers * dtype_bytes

    def kv_bytes(self, seq_len: int, dtype_bytes: float = 2.0) -> float:
        """KV bytes one sequence of ``seq_len`` tokens holds; sliding-window layers keep only the window."""
        per_layer = self.attention.kv_elems_per_token() * dtype_bytes
        sliding = len(self.sliding_layer_ids)
        window = min(seq_len, self.sliding_window) if self.sliding_window else seq_len
        return per_layer * ((self.num_layers - sliding) * seq_len + sliding * window)


def _spec_from_config(model_id: str, cfg: HFConfig, source: str) -> ModelSpec:
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
    )


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


@cache
def load_model(id_or_path: str) -> ModelSpec:
    """A catalog id (``deepseek-r1``) or a path to a Hugging Face config.json."""
    index = model_index()
    if id_or_path in index:
        entry = index[id_or_path]
        path = MODELS_DIR / entry["file"]
        source = entry["source"]
    else:
        path = Path(id_or_path)
        if not (path.suffix == ".json" or path.exists()):
            raise UnknownIdError("model", id_or_path, list(index) + ["<path to config.json>"])
        source = str(path)
    data = parse_json(read_text(path, "model config", MAX_YAML_BYTES), str(path))
    return parse_config(id_or_path if id_or_path in index else path.name, data, source)
