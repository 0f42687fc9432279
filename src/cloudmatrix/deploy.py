"""Deployments: what runs where. A ``Deployment`` is what the user asks for; ``plan`` resolves it on a
system and model into per-die shapes (sequences, tokens, expert slots) and checks that it fits."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.routing import RoutingProfile, model_routing, parse_routing
from cloudmatrix.deploy_checks import (
    check_context_parallel,
    check_draft_tree,
    check_formats,
    check_kernels,
    check_layout,
    check_offload,
    check_stack,
    verify_tokens_per_seq,
)
from cloudmatrix.deployment import (  # noqa: F401 (re-exported: the deployment types are deploy's vocabulary)
    CACHE_PLANES,
    DEFAULT_ATTENTION_TP,
    Deployment,
    Eplb,
    MoeComm,
    Phase,
)
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.frozen import fill_dict_init
from cloudmatrix.units import BYTES_PER_ELEMENT

# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_LOCAL, _ALL_REDUCE, _ALL_GATHER, _DISPATCH, _PREFILL, _AGGREGATED = (
    MoeComm.LOCAL,
    MoeComm.ALL_REDUCE,
    MoeComm.ALL_GATHER,
    MoeComm.DISPATCH,
    Phase.PREFILL,
    Phase.AGGREGATED,
)


@dataclass(frozen=True, kw_only=True)
class ExpertLayout:
    """How routed and shared experts sit on the EP ranks (one MoE layer)."""

    ep: int
    routed_slots_per_die: int  # on dies that hold routed experts
    routed_dies: int
    shared_dies: int  # dies that hold only a shared-expert copy (0: shared expert local on every die)
    redundant: int

    @property
    def routed_slots(self) -> int:
        return self.routed_slots_per_die * self.routed_dies


def shared_expert_dies(model: ModelSpec, ep: int) -> int:
    """Dies for the shared experts when EP has more ranks than routed experts and the deployment does not
    say: sized so that a shared die carries about a routed die's rows, ranks × shared / (top-k + shared)
    (every token visits top-k routed experts and every shared one). Fewer dies (the old even split of the
    spare ranks: 16 at EP288) make each shared die carry about twice a routed die's rows."""
    moe = model.moe
    assert moe is not None
    if not moe.num_shared or ep <= moe.num_routed:
        return 0
    return max(1, math.floor(ep * moe.num_shared / (moe.top_k + moe.num_shared) + 0.5))


def stated_shared_dies(model: ModelSpec, ep: int | None, stated: int | None) -> int | None:
    """A published layout's shared-expert dies where they apply to ``model``: a preset states its own model's
    (the paper's 32 at EP320 for DeepSeek), which another model placed there ignores (None: the layout rule)."""
    moe = model.moe
    if stated is None or moe is None or not moe.num_shared or ep is None or ep <= moe.num_routed:
        return None
    return stated


def expert_layout(model: ModelSpec, ep: int, redundant: int | None, shared_dies: int | None = None) -> ExpertLayout:
    """Routed and shared experts on the EP ranks. Shared experts sit on dies of their own where the deployment
    says how many (``shared_dies``: the paper's EP320 runs 256 routed + 32 redundant + 32 shared) or where EP
    has more ranks than routed experts (``shared_expert_dies``); else a copy is local on every die. The routed
    experts fill the other dies, ceil(experts / dies) per die, the slots beyond one copy of each being
    redundant copies (EPLB's); with ``redundant`` stated, that many extra slots spread over those dies. Without
    dies of their own for shared experts, a layout whose slots divide exactly gets one redundant slot per die
    (EP32: 8 + 1)."""
    moe = model.moe
    assert moe is not None
    key = (moe.num_routed, moe.num_shared, moe.top_k, ep, redundant, shared_dies)  # every input of the rule
    layout = _LAYOUTS.get(key)
    if layout is None:
        if len(_LAYOUTS) >= 1024:
            _LAYOUTS.clear()
        layout = _LAYOUTS[key] = _expert_layout(model, ep, redundant, shared_dies)
    return layout


# Layouts already made (immutable; a frozen dataclass costs more to make than the rule to apply)
_LAYOUTS: dict[tuple[int, int, int, int, int | None, int | None], ExpertLayout] = {}


def _expert_layout(model: ModelSpec, ep: int, redundant: int | None, shared_dies: int | None) -> ExpertLayout:
    moe = model.moe
    assert moe is not None
    n = moe.num_routed
    shared = shared_expert_dies(model, ep) if shared_dies is None else shared_dies
    if shared and not moe.num_shared:
        raise InfeasibleDeploymentError(f"shared_dies {shared}: the model has no shared experts to place")
    if shared >= ep:
        raise InfeasibleDeploymentError(
            f"shared_dies {shared} leaves no die of EP{ep} for the {n} routed experts; expected fewer than {ep}"
        )
    dies = ep - shared
    per_die = math.ceil((n + (redundant or 0)) / dies)
    red = per_die * dies - n
    if redundant is None and red == 0 and not shared:
        per_die += 1
        red = dies
    return ExpertLayout(ep=ep, routed_slots_per_die=per_die, routed_dies=dies, shared_dies=shared, redundant=red)


def balanced_chunk_tokens(d: Deployment) -> float:
    """Prompt tokens per chip per step that keep an aggregated instance in steady state: as many new prompt
    tokens as the finishing sequences free, i.e. batch × accepted tokens per step × input / output."""
    assert d.batch_per_chip is not None
    return d.batch_per_chip * mtp_tokens_per_step(d.mtp, d.mtp_acceptance) * d.input_len / max(d.output_len, 1)


def kv_group(tp: int, attention_tp: int, cp: int = 1) -> int:
    """Dies that hold a prefilled prompt's KV, and so the NICs its hand-off to decode is striped over: the
    context-parallel group that split the prompt, the tensor-parallel group of a dense model, else the MLA
    prefill TP group (P3 §4.3.3)."""
    if cp > 1:
        return cp
    return tp if tp > 1 else attention_tp


SPECULATION_METHODS = ("mtp", "ngram", "eagle3")  # draft sources priced: MTP layers, host n-grams, EAGLE-3 heads


def mtp_tokens_per_step(mtp: int, acceptance: float) -> float:
    """Accepted tokens per step with ``mtp`` draft tokens: 1 + a + a^2 + ... (design.md §3 rule 5)."""
    return 1.0 + sum(acceptance**i for i in range(1, mtp + 1))


def acceptance_for_length(mtp: int, accept_length: float) -> float:
    """The per-draft-token acceptance a whose chain of ``mtp`` drafts accepts ``accept_length`` tokens per
    step (1 + a + ... + a^mtp), as engines publish it (SGLang's accept length, vLLM's mean acceptance
    length). Accepted tokens grow monotonically with a, so bisection finds it; lengths outside
    [1, 1 + mtp] are refused by the caller."""
    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2^-60: well below any published figure's precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mtp_tokens_per_step(mtp, mid) < accept_length else (lo, mid)
    return (lo + hi) / 2


_T = TypeVar("_T")


class _derived(Generic[_T]):  # noqa: N801 (a decorator, like property)
    """A property computed on first read and kept in the instance's ``__dict__`` (a frozen dataclass allows
    that), without ``functools.cached_property``'s lock: the cost model reads a plan's derived figures
    hundreds of times per estimate, and each plan lives for one estimate."""

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self.compute, self.name, self.__doc__ = compute, compute.__name__, compute.__doc__

    def __get__(self, plan: Any, owner: type | None = None) -> _T:
        value = plan.__dict__[self.name] = self.compute(plan)
        return value


@fill_dict_init
@dataclass(frozen=True, kw_only=True)
class Plan:
    """A deployment resolved on hardware and a model: the per-die shapes the cost model prices."""

    deployment: Deployment
    hardware: Hardware
    model: ModelSpec
    num_dies: int
    seqs_per_die: float  # decode: sequences; prefill: sequences in the batch
    tokens_per_die: float  # tokens each die processes per step (decode: seqs x (1 + mtp), or the token tree)
    kv_len: float  # decode: mean context per sequence; prefill: prompt length
    layout: ExpertLayout | None
    routing: RoutingProfile
    chunk_tokens_per_die: float = 0.0  # aggregated: prompt tokens prefilled alongside the decode batch
    cached_tokens_per_die: float = 0.0  # prefill: prompt tokens whose KV is loaded, not computed

    @_derived
    def cached_len(self) -> float:
        """Prefill: the cached prefix of each prompt, in tokens."""
        return self.kv_len * self.deployment.cached_fraction

    @_derived
    def tp(self) -> int:
        """Dies that share one batch by splitting attention heads, dense FFN columns and vocabulary (1:
        data-parallel attention). MLA's latent KV cannot be split by head, so each die of an MLA TP group
        holds and reads the group's whole cache.
        Per-die token and sequence counts are then the group's: each die processes all of them for its
        shard."""
        return self.deployment.tp

    @_derived
    def cp(self) -> int:
        """Prefill context parallelism: dies that split each prompt's tokens (1: none)."""
        return self.deployment.cp

    @_derived
    def moe_group(self) -> int:
        """Dies that hold one full copy of the routed experts: EP ranks x expert-TP width."""
        return self.layout.ep * self.deployment.moe_tp if self.layout else 1

    @_derived
    def moe_comm(self) -> MoeComm:
        g = self.moe_group
        if g == 1:
            return _LOCAL
        if self.tp == g:
            return _ALL_REDUCE
        return _ALL_GATHER if self.deployment.moe_tp > 1 else _DISPATCH

    @_derived
    def kv_shards(self) -> int:
        """Ways the KV cache is split across a TP group: by KV head, so never more than there are heads."""
        a = self.model.attention
        return min(self.tp, a.num_kv_heads) if a.kind != "mla" else 1

    @_derived
    def decodes(self) -> bool:
        """Decode-shaped steps (DP attention over cached sequences): decode and aggregated instances."""
        return self.deployment.phase != _PREFILL

    @_derived
    def decode_tokens_per_die(self) -> float:
        return self.tokens_per_die - self.chunk_tokens_per_die

    @_derived
    def phase(self) -> Phase:
        return self.deployment.phase

    @_derived
    def weight_bytes(self) -> float:
        return BYTES_PER_ELEMENT[self.deployment.precision]

    @_derived
    def compute_precision(self) -> str:
        """The format the GEMMs compute in: their activations' (W8A8, W4A4; W4A16 computes in BF16)."""
        return self.deployment.activation_precision or self.deployment.precision

    @_derived
    def kv_bytes(self) -> float:
        return BYTES_PER_ELEMENT[self.deployment.kv_precision]

    @_derived
    def dispatch_bytes(self) -> float:
        return BYTES_PER_ELEMENT[self.deployment.dispatch_precision or self.compute_precision]

    @_derived
    def activation_bytes(self) -> float:
        """GEMM inputs as the quantising kernels write them."""
        return BYTES_PER_ELEMENT[self.compute_precision]


def plan(deployment: Deployment, hardware: Hardware, model: ModelSpec) -> Plan:
    d = deployment
    check_stack(d, hardware)
    check_kernels(d, hardware)
    check_formats(d, hardware)
    if d.num_chips < 1 or d.num_chips > hardware.system.num_chips:
        raise InfeasibleDeploymentError(
            f"chips {d.num_chips} must be between 1 and the {hardware.system.num_chips} chips of {hardware.system.id}"
        )
    if not 0.0 <= d.mtp_acceptance <= 1.0:
        raise InfeasibleDeploymentError(f"MTP acceptance {d.mtp_acceptance} must be between 0 and 1")
    if d.speculation not in SPECULATION_METHODS:
        raise InfeasibleDeploymentError(
            f"speculation '{d.speculation}' is not one of: {', '.join(SPECULATION_METHODS)}"
        )
    if d.mtp and d.speculation == "mtp" and model.mtp_layers == 0:
        raise InfeasibleDeploymentError(
            f"model {model.id} has no MTP layers (num_nextn_predict_layers = 0); use --mtp 0"
        )
    check_draft_tree(d)
    dies = d.num_chips * hardware.chip.num_dies
    if d.reserve_gb is not None and not 0.0 <= d.reserve_gb < hardware.chip.die.hbm_gb.value:
        raise InfeasibleDeploymentError(
            f"reserve {d.reserve_gb} GB must be between 0 and the {hardware.chip.die.hbm_gb.value:g} GB HBM per die"
        )
    check_layout(d, model, dies)
    check_context_parallel(d, model, dies)
    check_offload(d, hardware, model)
    layout = None
    if model.moe:
        layout = expert_layout(model, d.ep or dies // d.moe_tp, d.redundant_experts, d.shared_dies)
    elif d.ep not in (None, 1):
        raise InfeasibleDeploymentError(f"model {model.id} is dense: it has no experts for EP{d.ep}")
    elif d.shared_dies:
        raise InfeasibleDeploymentError(
            f"model {model.id} is dense: it has no shared experts for shared_dies {d.shared_dies}"
        )
    chunk = cached = 0.0
    if d.phase != _PREFILL:
        idle_ok = d.phase == _AGGREGATED and d.batch_per_chip == 0 and (d.chunk_tokens_per_chip or 0) > 0
        if d.batch_per_chip is None or (d.batch_per_chip <= 0 and not idle_ok):
            raise InfeasibleDeploymentError(f"{d.phase.value} needs a positive --batch-per-chip")
        seqs = d.batch_per_chip / hardware.chip.num_dies * d.tp  # a TP group serves its dies' sequences together
        kv_len = d.kv_len if d.kv_len is not None else d.input_len + d.output_len / 2
        tokens = seqs * verify_tokens_per_seq(d)
        if d.phase == _AGGREGATED:
            chunk = balanced_chunk_tokens(d) if d.chunk_tokens_per_chip is None else d.chunk_tokens_per_chip
            if chunk < 0:
                raise InfeasibleDeploymentError(f"chunk tokens per chip must be >= 0, got {chunk}")
            chunk = chunk / hardware.chip.num_dies * d.tp
            tokens += chunk
    else:
        # SP packs sequences across the instance's dies, so a die may hold part of one prompt.
        tokens_chip = d.tokens_per_chip or 16384
        if tokens_chip <= 0:
            raise InfeasibleDeploymentError(f"tokens per chip must be positive, got {tokens_chip}")
        if not 0.0 <= d.cached_fraction < 1.0:
            raise InfeasibleDeploymentError(f"cached fraction {d.cached_fraction} must be in [0, 1)")
        if d.cache_plane not in CACHE_PLANES:
            raise InfeasibleDeploymentError(f"cache plane '{d.cache_plane}' is not one of: {', '.join(CACHE_PLANES)}")
        if d.cache_plane == "vpc" and d.cached_fraction > 0 and hardware.system.planes.storage is None:
            raise InfeasibleDeploymentError(
                f"cache plane 'vpc': {hardware.system.id} has no storage (VPC) plane to read a cache over; use 'ub'"
            )
        prompt_tokens = tokens_chip / hardware.chip.num_dies * d.tp
        cached = prompt_tokens * d.cached_fraction
        tokens = prompt_tokens - cached  # only the uncached suffix is computed (P3 §4.4.2)
        seqs = prompt_tokens / d.input_len
        kv_len = d.input_len
        heads = model.attention.num_heads
        if heads % d.attention_tp:
            raise InfeasibleDeploymentError(f"attention TP {d.attention_tp} must divide the {heads} heads")
    routing = model_routing(model.id)
    if isinstance(d.routing, RoutingProfile):
        routing = d.routing
    elif d.routing:
        routing = parse_routing(d.routing, routing)
    return Plan(
        cached_tokens_per_die=cached,
        routing=routing,
        chunk_tokens_per_die=chunk,
        deployment=d,
        hardware=hardware,
        model=model,
        num_dies=dies,
        seqs_per_die=seqs,
        tokens_per_die=tokens,
        kv_len=kv_len,
        layout=layout,
    )
