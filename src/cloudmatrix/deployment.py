"""What the user asks for: a ``Deployment`` of one phase, and the enums it is written in. Its numbers are
checked when it is made (``deploy.plan`` checks the rest against the hardware and model)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter
from typing import Any

from cloudmatrix.catalog.kernels import check_kernels
from cloudmatrix.catalog.reference import load_reference
from cloudmatrix.catalog.routing import RoutingProfile
from cloudmatrix.frozen import fill_dict_init
from cloudmatrix.inputs import check_number, check_optional

DEFAULT_ATTENTION_TP = 4  # prefill SP-TP-SP: dies per TP group (P3 gives no group sizes; assumed)
CACHE_PLANES = ("ub", "vpc")  # EMS reached over UB, or over the VPC (P3 §4.4, Fig. 23)
# The paper's instances (P3 §5.1), as the reference rows state them: decode EP320 at batch 96, KV 4K, MTP 1
# at 70 %, the engine running whichever of its two graphs (with or without the microbatch pipeline) is
# faster; prefill EP32 at 16K tokens per NPU of 4K prompts with the microbatch pipeline and EMS context
# caching over UB at the 50 % reuse point of Fig. 23; INT8 and default EPLB.
PAPER_SET, PAPER_DECODE_ROW, PAPER_PREFILL_ROW = "cloudmatrix-infer", "decode-b96-throughput", "ems-ttft-reuse50"


class Phase(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    AGGREGATED = "aggregated"  # co-located: each step decodes the batch and prefills a chunk of prompts


class Eplb(StrEnum):
    PERFECT = "perfect"  # every expert die gets exactly the mean load (the paper's projection)
    DEFAULT = "default"  # EPLB: hot experts replicated into the redundant slots, copies packed by load
    NONE = "none"  # one copy per expert in id order; redundant slots left empty


class MoeComm(StrEnum):
    """How tokens reach the experts of their MoE group (ep ranks x moe_tp dies, docs/model.md §3.2)."""

    LOCAL = "local"  # one die holds every expert: nothing is sent
    ALL_REDUCE = "all_reduce"  # the attention TP group is the MoE group: every die has every token
    ALL_GATHER = "all_gather"  # TP experts under DP attention: gather the group's tokens, reduce-scatter after
    DISPATCH = "dispatch"  # expert parallelism: all-to-all dispatch and combine (DeepEP, AIV-Direct)


@fill_dict_init
@dataclass(frozen=True, kw_only=True)
class Deployment:
    """One instance of one phase. Lengths are tokens; batch is per chip (package), as the paper reports."""

    phase: Phase
    num_chips: int
    ep: int | None = None  # expert-parallel ranks (dies); default: every die of the instance
    batch_per_chip: float | None = None  # decode: sequences per chip
    tokens_per_chip: int | None = None  # prefill: tokens per chip per batch
    input_len: int = 4096
    output_len: int = 256
    kv_len: int | None = None  # decode: mean KV length during the step; default input + output / 2
    precision: str = "int8"  # weights; also the GEMM compute format unless ``activation_precision`` says otherwise
    activation_precision: str | None = None  # GEMM inputs, hence the compute format (W4A16: fp4 + bf16)
    kv_precision: str = "bf16"
    dispatch_precision: str | None = None  # MoE dispatch payload; default: the GEMM precision
    mtp: int = 0  # speculative tokens per step
    mtp_acceptance: float = 0.0
    # where the ``mtp`` draft tokens come from: the model's MTP layers ("mtp"), or n-gram (prompt-lookup)
    # drafting on the host ("ngram": no device pass drafts; the verify pass is the step itself), or an EAGLE-3
    # draft head ("eagle3": k passes of its one layer and draft LM head, catalog/eagle.py)
    speculation: str = "mtp"
    # EAGLE-3 tree drafting (SGLang's --speculative-eagle-topk / --speculative-num-draft-tokens): candidates
    # each draft pass after the first expands per sequence, and the tokens the verify pass checks per sequence
    # (None: the chain's 1 + mtp)
    draft_topk: int = 1
    verify_tokens: int | None = None
    eplb: Eplb = Eplb.PERFECT
    microbatch: bool | None = None  # None: whichever is faster (the engine can capture both graphs)
    attention_tp: int = DEFAULT_ATTENTION_TP
    redundant_experts: int | None = None  # extra routed-expert slots for EPLB; default per `expert_layout`
    shared_dies: int | None = None  # dies holding only a shared-expert copy; default per `expert_layout`
    chunk_tokens_per_chip: float | None = None  # aggregated: prompt tokens per step; default keeps pace
    routing: str | RoutingProfile | None = None  # override (a spec string or a profile); default: the model's
    tp: int = 1  # attention TP group (dies) splitting heads, dense FFN and LM head; 1: data-parallel attention
    moe_tp: int = 1  # expert TP: each expert's FFN columns split over this many dies (EP ranks x moe_tp hold one copy)
    cp: int = 1  # prefill context parallelism: dies that split each prompt's tokens and all-gather its KV
    reserve_gb: float | None = None  # HBM per die kept from weights and KV; default: the stack's, else the chip's
    offload_gb: float = 0.0  # routed-expert weights per die kept in CPU memory, streamed over the CPU link (opt-in)
    cached_fraction: float = 0.0  # prefill: share of each prompt whose KV comes from the EMS context cache
    cache_plane: str = "ub"  # where cached KV is read from the pool: ub (scale-up) or vpc (storage plane)
    stack: str | None = None  # serving stack whose host time per step is added (None: device time only)
    # GEMM or fused attention kernels the deployment ran (measured curves, catalog/kernels.py; each measured on
    # the chip, deploy_checks): wherever one of them has a curve for an op they replace the stack's list (a
    # wide-EP launch with DeepGEMM, a backend flag); empty: the stack's
    kernels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_deployment_numbers(self)
        object.__setattr__(self, "kernels", check_kernels(self.kernels))


MAX_LEN = 10_000_000  # tokens of one prompt or completion
MAX_DRAFT_TOPK = 16  # EAGLE tree branching (SGLang's recipes use 1-10)
MAX_VERIFY_TOKENS = 1 + 8 * MAX_DRAFT_TOPK**2  # the largest tree of 8 draft steps
MAX_COUNT = 1_000_000  # chips, dies, sequences or tokens per chip of one step


def check_deployment_numbers(d: Deployment) -> None:
    """Every number of a deployment is finite and physical before anything divides by it (in the order of
    ``_NUMBERS``: the first bad one is named); a count given as an integral float (9.0 chips, from YAML, JSON
    or a computation) is held as the int 9 downstream."""
    for value, (name, label, lo, hi, integer, optional) in zip(_NUMBER_VALUES(d), _NUMBERS, strict=True):
        if value is None and optional:
            continue
        # the common case without a call: an int, or a float where no integer is asked, within the bounds
        # (NaN and the infinities fail the comparison and reach check_number, which names them)
        if (type(value) is int or (type(value) is float and not integer)) and lo <= value <= hi:
            continue
        check_number(label, value, lo=lo, hi=hi, integer=integer)
        if integer and isinstance(value, float):
            object.__setattr__(d, name, int(value))


# (field, how the user names it, lowest, highest, integer only, may be None)
_NUMBERS: tuple[tuple[str, str, float, float, bool, bool], ...] = (
    ("num_chips", "chips (--chips)", 1, MAX_COUNT, True, False),
    ("ep", "ep (--ep)", 1, MAX_COUNT, True, True),
    ("batch_per_chip", "batch_per_chip (--batch-per-chip)", 0, MAX_COUNT, False, True),
    ("tokens_per_chip", "tokens_per_chip (--tokens-per-chip)", 1, MAX_LEN, True, True),
    ("input_len", "input_len (--input-len)", 1, MAX_LEN, True, False),
    ("output_len", "output_len (--output-len)", 1, MAX_LEN, True, False),
    ("kv_len", "kv_len (--kv-len)", 1, 2 * MAX_LEN, True, True),
    ("mtp", "mtp (--mtp)", 0, 8, True, False),
    ("mtp_acceptance", "mtp_acceptance (--mtp-acceptance)", 0, 1, False, False),
    ("draft_topk", "draft_topk (--draft-topk)", 1, MAX_DRAFT_TOPK, True, False),
    ("verify_tokens", "verify_tokens (--verify-tokens)", 1, MAX_VERIFY_TOKENS, True, True),
    ("attention_tp", "attention_tp (--attention-tp)", 1, MAX_COUNT, True, False),
    ("redundant_experts", "redundant_experts (--redundant-experts)", 0, MAX_COUNT, True, True),
    ("shared_dies", "shared_dies (--shared-dies)", 0, MAX_COUNT, True, True),
    ("chunk_tokens_per_chip", "chunk_tokens_per_chip (--chunk-tokens-per-chip)", 0, MAX_LEN, False, True),
    ("tp", "tp (--tp)", 1, MAX_COUNT, True, False),
    ("moe_tp", "moe_tp (--moe-tp)", 1, MAX_COUNT, True, False),
    ("cp", "cp (--cp)", 1, MAX_COUNT, True, False),
    ("cached_fraction", "cached_fraction (--cached-fraction)", 0, 1, False, False),
    ("reserve_gb", "reserve_gb (--reserve-gb)", 0, 1e6, False, True),
    ("offload_gb", "offload_gb (--offload-gb)", 0, 1e6, False, False),
)
_NUMBER_VALUES = attrgetter(*(name for name, *_ in _NUMBERS))  # every checked field's value at once, in order
# Counts checked as integers; an integral float (from YAML, JSON or a computation) is held as an int.
INTEGER_FIELDS = tuple(name for name, _, _, _, integer, _ in _NUMBERS if integer)


def deployment_from_setup(setup: dict[str, Any], defaults: dict[str, Any]) -> Deployment:
    """The deployment a reference row's setup states (its set's defaults filling what the row leaves out)."""
    s = {**defaults, **setup}
    return Deployment(
        phase=Phase(s["phase"]),
        num_chips=s["chips"],
        ep=s.get("ep"),
        batch_per_chip=s.get("batch_per_chip"),
        tokens_per_chip=s.get("tokens_per_chip"),
        input_len=s.get("input_len", 4096),
        output_len=s.get("output_len", 256),
        kv_len=s.get("kv_len"),
        precision=s.get("precision", "int8"),
        kv_precision=s.get("kv_precision", "bf16"),
        mtp=s.get("mtp", 0),
        mtp_acceptance=s.get("mtp_acceptance", 0.0),
        eplb=Eplb(s.get("eplb", "perfect")),
        microbatch=s.get("microbatch"),
        routing=s.get("routing"),
        cached_fraction=s.get("cached_fraction", 0.0),
        cache_plane=s.get("cache_plane", "ub"),
        attention_tp=s.get("attention_tp", DEFAULT_ATTENTION_TP),
        shared_dies=s.get("shared_dies"),
    )


def paper_deployments() -> dict[Phase, Deployment]:
    """The paper's decode and prefill instances, from the setups of their reference rows."""
    ref = load_reference(PAPER_SET)
    setups = {r.id: r.setup for r in ref.rows}
    return {
        Phase.DECODE: deployment_from_setup(setups[PAPER_DECODE_ROW], ref.defaults),
        Phase.PREFILL: deployment_from_setup(setups[PAPER_PREFILL_ROW], ref.defaults),
    }


MAX_MICROBATCHES = 16  # ping-pong microbatches of an AFD step (the papers run 2-4)


@dataclass(frozen=True, kw_only=True)
class AfdDeployment:
    """Attention-FFN disaggregation of a decode instance (xDeepServe's MoE-attention disaggregation on
    CloudMatrix384, Step-3's AFD, MegaScale-Infer's disaggregated expert parallelism): ``attention`` is the
    attention pool (its chips, sequences per chip, precision, KV, MTP, attention TP); the FFN pool is
    ``ffn_chips`` of expert dies (EP over ``ffn_ep`` of them) at ``ffn_precision``; every layer's hidden
    states cross between the pools, and ``microbatches`` ping-pong to hide the crossing."""

    attention: Deployment
    ffn_chips: int
    ffn_ep: int | None = None  # default: every FFN die
    ffn_precision: str | None = None  # expert weights (and their GEMMs' format); default: the attention pool's
    microbatches: int = 2

    def __post_init__(self) -> None:
        check_number("ffn_chips (--ffn-chips)", self.ffn_chips, lo=1, hi=MAX_COUNT, integer=True)
        check_optional("ffn_ep (--ffn-ep)", self.ffn_ep, lo=1, hi=MAX_COUNT, integer=True)
        check_number("microbatches (--microbatches)", self.microbatches, lo=1, hi=MAX_MICROBATCHES, integer=True)
        for name in ("ffn_chips", "ffn_ep", "microbatches"):
            value = getattr(self, name)
            if isinstance(value, float):
                object.__setattr__(self, name, int(value))

    @property
    def num_chips(self) -> int:
        return self.attention.num_chips + self.ffn_chips
