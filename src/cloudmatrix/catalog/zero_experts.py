"""LongCat-Flash's config in the catalog's terms. Each LongCat layer holds two MLA attentions, two dense FFNs
and one shortcut-connected MoE whose router picks ``moe_topk`` of ``n_routed_experts`` FFN experts plus
``zero_expert_num`` zero-computation (identity) experts. For the cost that is two decoder layers: one with
attention and a dense FFN, one with attention and an MoE whose shared expert is the dense FFN (its width a
whole number of expert widths). Zero-computation experts have no weights and no FLOPs and are sent nowhere
(the identity is the token itself); they take a share of the top-k slots and widen the router's GEMM.

The share is not in the config: the router is trained (an expert-bias controller) to an expected number of
FFN experts per token. The technical report publishes the activated parameters instead, 18.6B-31.3B with
27B on average (arXiv 2509.01322, abstract and §2.1); 18.6B is the model with no FFN expert and 31.3B with
all top-k, so the mean gives the expected FFN experts, rounded to whole experts for the routing tables."""

from __future__ import annotations

import dataclasses
from typing import Any

from cloudmatrix.catalog.model_spec import ModelSpec
from cloudmatrix.errors import ConfigError

ARCHITECTURE = "LongcatFlashForCausalLM"
MEAN_ACTIVE_PARAMS = 27e9  # LongCat-Flash technical report (arXiv 2509.01322): 27B activated on average
SOURCE = "LongCat-Flash technical report (arXiv 2509.01322): 18.6B-31.3B activated per token, 27B on average"
# LongCat fields read here; anything else cost-relevant in a LongCat config is refused by name
UNPRICED = {
    "ngram_vocab_size_ratio": "n-gram embedding tables",
    "emb_neighbor_num": "n-gram embedding tables",
    "linear_method": "linear-attention layers",
    "nextn_use_scmoe": "a shortcut-MoE MTP layer",
}


def is_longcat(data: dict[str, Any]) -> bool:
    """A LongCat-Flash config, by architecture or model type (any other value of either is no LongCat)."""
    arch = data.get("architectures")
    return (isinstance(arch, list) and ARCHITECTURE in arch) or data.get("model_type") == "longcat_flash"


def _int(model_id: str, data: dict[str, Any], field: str) -> int:
    value = data.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{model_id}: LongCat config field {field} must be a positive integer, got {value!r}")
    return value


def ffn_experts_per_token(
    *, mean_active: float, no_expert_active: float, expert_params_all_layers: float, top_k: int
) -> int:
    """Expected FFN (non-identity) experts per token from the published mean activated parameters: the
    parameters beyond those of a token that meets no FFN expert, in whole experts, within 0..top_k."""
    experts = (mean_active - no_expert_active) / expert_params_all_layers
    return max(0, min(top_k, round(experts)))


def translate(model_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """The config as the catalog's fields: 2 x num_layers decoder layers, the first half dense, the second
    MoE with the dense FFN as its shared expert; top-k as the expected FFN experts; the identity experts
    kept as ``zero_experts`` (router width) and ``router_top_k`` (the slots they share)."""
    for field, what in UNPRICED.items():
        if data.get(field) not in (None, False):
            raise ConfigError(f"{model_id}: field {field} ({what}) is not modelled; the twin cannot price it")
    kind = data.get("zero_expert_type", "identity")
    if kind != "identity":
        raise ConfigError(f"{model_id}: zero_expert_type {kind!r} is not modelled (only 'identity' experts are)")
    layers = _int(model_id, data, "num_layers")
    _int(model_id, data, "hidden_size")
    dense, expert = _int(model_id, data, "ffn_hidden_size"), _int(model_id, data, "expert_ffn_hidden_size")
    routed, top_k = _int(model_id, data, "n_routed_experts"), _int(model_id, data, "moe_topk")
    zero = data.get("zero_expert_num", 0)
    if not isinstance(zero, int) or isinstance(zero, bool) or zero < 0:
        raise ConfigError(f"{model_id}: LongCat config field zero_expert_num must be >= 0, got {zero!r}")
    if dense % expert:
        raise ConfigError(
            f"{model_id}: ffn_hidden_size {dense} is not a multiple of expert_ffn_hidden_size {expert}; "
            "the shortcut dense FFN is priced as whole shared experts"
        )
    keep = {k: v for k, v in data.items() if k not in ("zero_expert_num", "num_layers", "num_hidden_layers")}
    out = keep | {
        "architectures": [ARCHITECTURE],
        "num_hidden_layers": 2 * layers,
        "first_k_dense_replace": layers,
        "intermediate_size": dense,
        "moe_intermediate_size": expert,
        "n_routed_experts": routed,
        "n_shared_experts": dense // expert,
        "num_experts_per_tok": top_k,
        "zero_experts": zero,
        "router_top_k": top_k,
    }
    return out


def with_expected_ffn_experts(spec: ModelSpec) -> ModelSpec:
    """A LongCat spec whose top-k is the expected FFN experts per token (the router's top-k kept as
    ``router_top_k``), from the report's mean activated parameters and the spec's own parameter counts."""
    moe = spec.moe
    assert moe is not None
    no_expert = dataclasses.replace(spec, moe=dataclasses.replace(moe, top_k=0)).active_params()
    k = ffn_experts_per_token(
        mean_active=MEAN_ACTIVE_PARAMS,
        no_expert_active=no_expert,
        expert_params_all_layers=spec.num_moe_layers * spec.expert_params(),
        top_k=moe.router_top_k or moe.top_k,
    )
    return dataclasses.replace(spec, moe=dataclasses.replace(moe, top_k=k))
