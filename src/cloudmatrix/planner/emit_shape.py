"""A planned deployment's roles in the terms engines are launched in: ranks (dies), nodes, tensor- and
data-parallel groups, expert-parallel size, per-rank batch caps, and the engine a serving stack maps to."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware

# The engine whose public flags launch each serving stack; stacks without a public launcher name the
# public engine nearest to them (the README of an emitted plan says so).
STACK_ENGINES = {
    "sglang": "sglang",
    "sglang-ascend": "sglang",
    "mori-sglang": "sglang",
    "dynamo-sglang": "sglang",
    "vllm": "vllm",
    "dynamo-vllm": "vllm",
    "vllm-ascend": "vllm-ascend",
    "trtllm": "trtllm",
    "dynamo-trtllm": "trtllm",
    "mindie": "mindie",
}
NEAREST_PUBLIC = {  # stack -> (engine, why)
    "cloudmatrix-infer": (
        "vllm-ascend",
        "CloudMatrix-Infer has no public launcher; vLLM Ascend runs the same model on Ascend",
    ),
    "deepseek": ("sglang", "DeepSeek's in-house engine has no public launcher; SGLang runs its large-EP recipe"),
    "atom": ("vllm", "ATOM's flags are not in the engines catalog; vLLM is the nearest engine design"),
}


def engine_for(stack: str, vendor: str) -> tuple[str, str]:
    """The engine id that launches ``stack`` and a note when it stands in for another stack."""
    if stack in STACK_ENGINES:
        return STACK_ENGINES[stack], ""
    if stack in NEAREST_PUBLIC:
        return NEAREST_PUBLIC[stack]
    return ("vllm-ascend" if vendor == "huawei" else "vllm"), f"stack '{stack}' has no launcher mapping; vLLM assumed"


@dataclass(frozen=True, kw_only=True)
class RoleShape:
    """One role (prefill or decode) of a plan as engines count it: a rank is a die (a 910C is two devices)."""

    role: str
    instances: int
    chips: int
    ranks: int  # devices of one instance
    nodes: int  # nodes one instance spans
    ranks_per_node: int
    tp: int  # attention tensor-parallel group (1: data-parallel attention)
    dp: int  # attention data-parallel groups: ranks / tp
    ep: int | None  # expert-parallel size (None: a dense model)
    moe: bool
    microbatch: bool
    eplb: bool
    batch_per_rank: int  # decode: sequences per DP rank (the engine's running cap); prefill: 1
    tokens_per_batch: int  # prefill: prompt tokens per instance batch; decode: 0
    mtp: int
    speculation: str

    @property
    def batch_per_instance(self) -> int:
        return self.batch_per_rank * self.dp


def role_shapes(scenario: dict[str, Any], hw: Hardware) -> list[RoleShape]:
    """The prefill and decode roles of a planned scenario (``planner.scenario_out.scenario_dict``)."""
    dies_per_chip, per_node = hw.chip.num_dies, hw.dies_per_node
    shapes = []
    for role in ("prefill", "decode"):
        r = scenario[role]
        ranks = int(r["chips"]) * dies_per_chip
        tp = max(int(r.get("tp", 1)), int(r.get("attention_tp", 1)) if role == "prefill" and r["ep"] else 1)
        tp = min(tp, ranks)
        dp = max(ranks // tp, 1)
        if role == "decode":
            batch = math.ceil(float(r["batch_per_chip"]) * int(r["chips"]) / dp)
            tokens = 0
        else:
            batch, tokens = 1, int(r["tokens_per_chip"]) * int(r["chips"])
        shapes.append(
            RoleShape(
                role=role,
                instances=int(r["instances"]),
                chips=int(r["chips"]),
                ranks=ranks,
                nodes=max(math.ceil(ranks / per_node), 1),
                ranks_per_node=min(ranks, per_node),
                tp=tp,
                dp=dp,
                ep=int(r["ep"]) if r.get("ep") else None,
                moe=bool(r.get("ep")),
                microbatch=bool(r.get("microbatch")),
                eplb=r.get("eplb", "default") == "default",
                batch_per_rank=batch,
                tokens_per_batch=tokens,
                mtp=int(r.get("mtp", 0)),
                speculation=str(r.get("speculation", "mtp")),
            )
        )
    return shapes
