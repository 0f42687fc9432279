"""EAGLE-3 draft heads (arXiv 2503.01840; SGLang's ``llama_eagle3.py``, SpecForge's draft configs): one
Llama-style decoder layer at the target's hidden size whose attention reads the token embedding and the
draft's hidden state side by side (a 2h-wide QKV input), an ``fc`` that fuses three of the target's hidden
states (low, middle, high: 3h -> h) once per step, and an LM head over a reduced draft vocabulary. The head
is priced as a one-layer dense model (``eagle3_draft``) plus those two extra matrices."""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.catalog.model_spec import AttentionSpec, ModelSpec

# SpecForge's and SGLang's EAGLE-3 draft configs map the target's vocabulary onto 32,000 draft tokens
DRAFT_VOCAB = 32_000
HEAD_DIM = 128  # Llama-style draft attention where the target's is MLA (assumed)
KV_HEADS = 8  # ditto (assumed)


@dataclass(frozen=True, kw_only=True)
class Eagle3Head:
    draft: ModelSpec  # the one-layer dense model each draft pass runs
    fc_params: int  # 3h -> h, run once per step over the accepted tokens
    embed_qkv_params: int  # the QKV columns fed by the token embedding (the other half of the 2h input)

    def params(self) -> int:
        d = self.draft
        return d.dense_layer_params() + d.lm_head_params() + self.fc_params + self.embed_qkv_params


def eagle3_head(target: ModelSpec) -> Eagle3Head:
    """The draft head of ``target``: attention shaped like the target's (GQA) or Llama-style over 128-wide
    heads (MLA and others), the FFN as wide as the target's dense FFN (else 3h), the draft vocabulary."""
    h, a = target.hidden, target.attention
    if a.kind == "gqa":
        heads, kv_heads, head_dim = a.num_heads, a.num_kv_heads, a.qk_head_dim
    else:
        heads, kv_heads, head_dim = max(h // HEAD_DIM, 1), KV_HEADS, HEAD_DIM
    kv_heads = min(kv_heads, heads)
    attention = AttentionSpec(
        kind="gqa", num_heads=heads, num_kv_heads=kv_heads, qk_head_dim=head_dim, v_head_dim=head_dim
    )
    draft = ModelSpec(
        id=f"{target.id}-eagle3",
        model_type="eagle3",
        hidden=h,
        num_layers=1,
        vocab=DRAFT_VOCAB,
        tied_embeddings=False,
        attention=attention,
        dense_intermediate=target.dense_intermediate or 3 * h,
        moe=None,
        moe_layer_ids=(),
        sliding_window=None,
        sliding_layer_ids=(),
        mtp_layers=0,
        source=f"EAGLE-3 draft head of {target.id} (shape assumed from the target: docs/model.md)",
    )
    qkv = h * (heads + 2 * kv_heads) * head_dim
    return Eagle3Head(draft=draft, fc_params=3 * h * h, embed_qkv_params=qkv)
