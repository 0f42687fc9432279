"""Serving-stack profiles (``data/stacks.yaml``): what a serving stack adds to the hardware's step time, per
chip family. ``step_overhead_us`` is the host time of every engine step (scheduler, batch assembly, sampling
hand-off, graph launch) that the device does not hide; ``request_overhead_ms`` is the fixed time a request
spends outside the engine before its prefill (HTTP front end, tokenisation, routing, first-token streaming);
``handoff_overhead_ms`` is the prefill-to-decode KV hand-off handshake of a disaggregating front end.
``runs_on`` names the hardware vendors a stack has builds for: a stack is never priced on another's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Literal, TypeVar

from cloudmatrix.catalog.record import Record, field
from cloudmatrix.catalog.sourced import DATA_DIR, Sourced, parse_file
from cloudmatrix.errors import ConfigError, UnknownIdError

STACKS_PATH = DATA_DIR / "stacks.yaml"
DEFAULT_FAMILY = "default"
Vendor = Literal["nvidia", "amd", "huawei"]  # a system's ``vendor`` in the hardware catalog
GRAPH_ENTRY = "graph"  # the override key (stack, GRAPH_ENTRY) replaces a stack's graph costs
_T = TypeVar("_T")  # a stack setting a front end inherits from its engine
# In-memory replacements of catalog entries, keyed (stack, family entry) or (stack, GRAPH_ENTRY): the hold-out
# study prices a group with constants refitted without its rows (``overridden_costs``); nothing is written to
# the catalog. The key of the overrides in force is made once per block (priced-step caches read it often).
_OVERRIDES: ContextVar[Mapping[tuple[str, str], Override] | None] = ContextVar("stack_cost_overrides", default=None)
_OVERRIDES_KEY: ContextVar[tuple[tuple[tuple[str, str], str], ...]] = ContextVar("stack_overrides_key", default=())


class StackCosts(Record):
    step_overhead_us: Sourced
    request_overhead_ms: Sourced
    handoff_overhead_ms: Sourced
    # op (GEMM: dense, grouped, grouped_gathered; fused attention: attention) -> kernels it picks from
    kernels: dict[str, list[str]] = field(default_factory=dict)
    kernels_source: str = ""
    # the fixed cost each op of the engine's captured device graph adds on this family beyond the chip's
    # ``launch_us`` (None: nothing fitted); a device cost, not host time, so it leaves the host basis alone
    op_launch_us: Sourced | None = None
    # host time per op launch of a step, beside the fixed ``step_overhead_us``: set where an engine with no
    # fit rows of its own is priced with the other engines' law per op of the step (a hold-out fall-back),
    # so a model with more ops per step pays more; None: none
    step_op_us: Sourced | None = None
    # host and launch time per op launch of a step in units of the chip's ``graph_task_us`` (its kernels per op,
    # fitted or the engine's prior): set by a hold-out fall-back, so the time per op follows the chip's generation
    # (Blackwell's kernel node costs 0.6 times Hopper's) instead of the family it was fitted on; None: none
    step_kernels: Sourced | None = None
    # the engine's kernels per op of the twin on this family beyond the one the chip's ``launch_us`` prices
    # (counted from its source): times the chip's ``graph_task_us``, the prior priced where no fit may be used
    tasks_per_op: Sourced | None = None

    @property
    def request_s(self) -> float:
        """Fixed time of a request outside the engine (front end), seconds."""
        return self.request_overhead_ms.value / 1e3

    @property
    def handoff_s(self) -> float:
        """The prefill-to-decode hand-off handshake, seconds."""
        return self.handoff_overhead_ms.value / 1e3


class CostsLike(Record):
    """A family priced as another stack's fitted family (``like: vllm/hopper``): an assumption for engines
    with no fit rows of their own, which follows that fit when `calibrate` moves it."""

    like: str = field(pattern=r"^[a-z0-9-]+/[a-z0-9-]+$")
    source: str = field(min_length=1)
    op_launch_us: Sourced | None = None  # this family's own graph cost per op (the named entry's otherwise)
    tasks_per_op: Sourced | None = None  # this family's own kernels per op beyond the first (the prior's count)
    kernels: dict[str, list[str]] = field(default_factory=dict)  # own kernels per op (over the named entry's)
    kernels_source: str = ""


class StackMemory(Record):
    """How much of each die's HBM the engine fills with weights, activations and KV; the rest is reserve.
    ``holds``: what the fraction bounds. ``all``: weights, KV and the step's activation and communication
    buffers, with the reserve beside them. ``weights_kv``: weights and the KV pool only (SGLang's
    --mem-fraction-static: the KV pool is what the fraction leaves after the weights), the activations,
    graphs and communication buffers living in the rest of HBM."""

    fraction: Sourced
    of: Literal["total", "free"] = "total"  # of all HBM (vLLM, SGLang), or of what the weights leave (TensorRT-LLM)
    holds: Literal["all", "weights_kv"] = "all"
    holds_source: str = ""
    # DP attention with an attention TP group: the output projection is row-parallel over the group (SGLang),
    # not replicated on every die as in CloudMatrix-Infer's sequence-parallel o_proj
    o_proj_split: bool = False
    o_proj_source: str = ""


# How an engine fills a co-located step (docs/model.md §10): ``chunk-beside-decode`` decodes the whole batch
# and prefills up to the budget beside it (the simulation's rule where an engine states none); ``mixed``
# schedules the decode tokens first and prompt chunks in what is left of the same token budget (vLLM's V1
# scheduler, TensorRT-LLM's micro-batch scheduler); ``prefill-first`` runs a prefill-only batch of up to the
# budget whenever prompts wait or are part-done and decodes only when none do (SGLang without mixed chunks).
Scheduling = Literal["chunk-beside-decode", "mixed", "prefill-first"]
SCHEDULING_POLICIES: tuple[Scheduling, ...] = ("chunk-beside-decode", "mixed", "prefill-first")
DEFAULT_SCHEDULING: Scheduling = "chunk-beside-decode"  # an engine that states no policy


class EngineDefaults(Record):
    """What the engine runs with when a deployment does not say: its chunked-prefill budget (prompt tokens
    per step per engine instance), how its scheduler fills a co-located step with it, and its KV cache
    format."""

    chunk_tokens: Sourced | None = None
    scheduling: Scheduling | None = None
    scheduling_source: str = ""
    kv_precision: str | None = None
    kv_source: str = ""
    # the format a DSA lightning indexer scores in and caches its keys in, where the engine's kernel does not
    # take the chip's lowest (None: FP8 where the chip has it, else INT8)
    indexer_precision: Literal["bf16"] | None = None
    indexer_source: str = ""


class SchedulerLoop(Record):
    """How the engine's scheduler loop meets the device, at the engine version its rows ran (``version``):
    ``overlap`` where it forms and launches step n + 1 while step n runs (SGLang's ``event_loop_overlap``,
    TensorRT-LLM's ``_executor_loop_overlap``, vLLM's async scheduling), so a request that arrives during a
    step waits for it and for the one already launched behind it; else the loop takes new requests in
    between steps. ``speculative``: whether the loop still overlaps with speculative decoding on. The loop runs
    from version ``since`` (empty: from its first) up to, not including, ``until`` (empty: still so), as the
    engine's default or, where the source says the rows' recipes set it, by ``flag``, the switch that changes
    it (vLLM's ``--async-scheduling``: opt-in up to v0.13, set by the InferenceMAX recipes)."""

    overlap: bool
    speculative: bool = True
    version: str = field(min_length=1)
    since: str = ""
    until: str = ""
    flag: str = ""
    source: str = field(min_length=1)


class RunsOn(Record):
    """The vendors whose chips a stack has a build for, with where that is stated."""

    vendors: list[Vendor] = field(min_length=1)
    source: str = field(min_length=1)


class GraphExecution(Record):
    """How a stack runs a step's captured device graphs where a graph launch has a start-up cost (the chip's
    ``graph_launch_us``, Ascend): the launches per step whose start-up its host does not hide (with and
    without draft tokens), and the fixed cost each op of its graph adds beyond the chip's ``launch_us`` (a
    graph captured op by op from PyTorch dispatches more, smaller tasks than a compiled, fused static graph):
    ``tasks_per_op`` of the chip's ``graph_task_us`` each (the prior, a runtime property), or ``op_launch_us``
    where that is fitted on the stack's rows."""

    launches: Sourced
    launches_speculative: Sourced
    tasks_per_op: Sourced  # the engine's device tasks per op of the twin (counted from its source)
    op_launch_us: Sourced | None = None  # fitted on rows (CALIB); None: the prior

    def exposed_launches(self, speculative: bool) -> float:
        return (self.launches_speculative if speculative else self.launches).value


class StackProfile(Record):
    id: str
    name: str
    source: str
    runs_on: RunsOn
    base: str | None = None  # a front end over another stack's engine (Dynamo): its costs where none of its own
    families: dict[str, StackCosts | CostsLike] = field(default_factory=dict)  # chip family (or ``default``)
    memory_setting: StackMemory | None = field(default=None, alias="memory")
    engine_defaults: EngineDefaults | None = field(default=None, alias="defaults")
    graph: GraphExecution | None = None  # None: graph launches hidden and no cost per op beyond the chip's
    # the engine's device kernels per op of the twin beyond the one the chip's ``launch_us`` prices (counted from
    # its source, or assumed): times the chip's ``graph_task_us``, the host-time prior per op of a step where the
    # engine has no fit row left (plus the other engines' excess per op over their own priors where they keep
    # rows: studies/holdout_refit.py); a front end's is its engine's
    op_kernels_setting: Sourced | None = field(default=None, alias="op_kernels")
    # the engine's host time per request at the first token (HTTP, tokenising, scheduling, detokenising and
    # streaming it), ms, from published single-client runs on small models: the request-time prior where the
    # engine has no fit row left, beside ``op_kernels``; a front end's is its engine's
    request_ms_setting: Sourced | None = field(default=None, alias="request_ms")
    loop_setting: SchedulerLoop | None = field(default=None, alias="loop")  # None: the base engine's, else none
    # a disaggregated decode engine's iterations between taking in a generation-only request and its first
    # token, beyond the intake wait of ``prompt_wait_steps`` (polling the KV pull, the iteration whose
    # response carries the token); None: the first token is out when the KV cache lands
    handoff_steps_setting: Sourced | None = field(default=None, alias="handoff_steps")

    @property
    def op_kernels(self) -> Sourced | None:
        """The engine's kernels per op beyond the first (a front end's are its engine's); None: not stated."""
        return self._engines(self.op_kernels_setting, "op_kernels")

    @property
    def request_ms(self) -> Sourced | None:
        """The engine's host time per request at the first token, ms (a front end's is its engine's); None:
        not stated."""
        return self._engines(self.request_ms_setting, "request_ms")

    @property
    def loop(self) -> SchedulerLoop | None:
        """The engine's scheduler loop (a front end's, or a build's, is its engine's); None: not stated."""
        return self._engines(self.loop_setting, "loop")

    @property
    def handoff_steps(self) -> Sourced | None:
        """A disaggregated decode engine's iterations from intake to first token (a front end's are its
        engine's); None: not stated (the first token is out when the KV cache lands)."""
        return self._engines(self.handoff_steps_setting, "handoff_steps")

    @property
    def defaults(self) -> EngineDefaults:
        """The engine's defaults (a front end's are its engine's); empty where none are stated."""
        if self.engine_defaults is None and self.base is not None:
            return load_stack(self.base).defaults
        return self.engine_defaults or EngineDefaults()

    @property
    def memory(self) -> StackMemory | None:
        """The engine's memory setting (a front end's is its engine's); None: the chip's reserve only."""
        return self._engines(self.memory_setting, "memory")

    def _engines(self, own: _T | None, name: str) -> _T | None:
        """``own`` where this stack states it, else its base engine's ``name`` (a front end's setting is its
        engine's)."""
        if own is None and self.base is not None:
            inherited: _T | None = getattr(load_stack(self.base), name)
            return inherited
        return own

    def costs(self, family: str) -> StackCosts:
        """Own costs for the family, else the base engine's, else own default; a ``like`` entry is the
        named stack's family."""
        if family in self.families:
            entry = self.families[family]
        elif self.base is not None:
            return load_stack(self.base).costs(family)
        else:
            entry = self.families[DEFAULT_FAMILY]
        overrides = _OVERRIDES.get()
        found = overrides.get((self.id, family if family in self.families else DEFAULT_FAMILY)) if overrides else None
        if isinstance(found, StackCosts):
            return found
        if isinstance(entry, CostsLike):
            stack, like_family = entry.like.split("/")
            named = load_stack(stack).costs(like_family)
            own = entry.op_launch_us is not None or entry.tasks_per_op is not None or bool(entry.kernels)
            return _with_own(named, entry) if own else named
        return entry


Override = StackCosts | GraphExecution


# (id of the named costs, id of the like entry) -> both, and the named costs with the entry's cost per op; the
# objects are held so their ids are not reused while cached (the pricing asks for a family's costs every step)
_LIKE_COPIES: dict[tuple[int, int], tuple[StackCosts, CostsLike, StackCosts]] = {}


def _with_own(named: StackCosts, entry: CostsLike) -> StackCosts:
    """The named stack's costs with a ``like`` entry's own graph cost per op, its count for the prior and its
    kernels, where it states them."""
    key = (id(named), id(entry))
    hit = _LIKE_COPIES.get(key)
    if hit is None:
        if len(_LIKE_COPIES) >= 64:
            _LIKE_COPIES.clear()
        own: dict[str, object] = {}
        if entry.op_launch_us is not None or entry.tasks_per_op is not None:
            own |= {"op_launch_us": entry.op_launch_us, "tasks_per_op": entry.tasks_per_op}
        if entry.kernels:
            own |= {"kernels": {**named.kernels, **entry.kernels}, "kernels_source": entry.kernels_source}
        hit = _LIKE_COPIES[key] = (named, entry, named.model_copy(update=own))
    return hit[2]


@contextmanager
def overridden_costs(overrides: Mapping[tuple[str, str], Override]) -> Iterator[None]:
    """Price with ``overrides`` in place of the named (stack, family) entries, and of a stack's graph costs
    under (stack, ``GRAPH_ENTRY``), inside the block (a ``like`` reference to a replaced entry follows it)."""
    token = _OVERRIDES.set(dict(overrides))
    key = tuple(sorted((k, costs.model_dump_json()) for k, costs in overrides.items()))
    key_token = _OVERRIDES_KEY.set(key)
    try:
        yield
    finally:
        _OVERRIDES_KEY.reset(key_token)
        _OVERRIDES.reset(token)


def overrides_key() -> tuple[tuple[tuple[str, str], str], ...]:
    """The stack-cost overrides in force, as a hashable key (empty without any): a cache of priced steps
    keys on it, so a price made under one refit is never served under another, or under none."""
    return _OVERRIDES_KEY.get()


class StackCatalog(Record):
    stacks: list[StackProfile]


@cache
def _catalog() -> dict[str, StackProfile]:
    cat = parse_file(StackCatalog, STACKS_PATH)
    stacks = {s.id: s for s in cat.stacks}
    for s in stacks.values():
        if s.base is not None and s.base not in stacks:
            raise ConfigError(f"{STACKS_PATH.name}: stack {s.id} has unknown base {s.base!r}")
        if s.base is None and DEFAULT_FAMILY not in s.families:
            raise ConfigError(f"{STACKS_PATH.name}: stack {s.id} needs a '{DEFAULT_FAMILY}' family or a base")
    return stacks


def stack_ids() -> list[str]:
    return sorted(_catalog())


def load_stack(stack: str) -> StackProfile:
    if stack not in _catalog():
        raise UnknownIdError("serving stack", stack, stack_ids())
    return _catalog()[stack]


def not_run_reason(stack: str, vendor: str, system: str) -> str | None:
    """Why ``stack`` cannot serve on ``system`` (made by ``vendor``), or None when it has a build for it."""
    runs_on = load_stack(stack).runs_on.vendors
    if vendor in runs_on:
        return None
    others = [s for s in stack_ids() if vendor in _catalog()[s].runs_on.vendors]
    hint = f"; stacks that run on {vendor}: {', '.join(others)}" if others else ""
    return f"stack {stack} does not run on {vendor} (system {system}); it runs on {', '.join(runs_on)}{hint}"


def check_runs_on(stack: str | None, vendor: str, system: str) -> None:
    """Refuse a stack on a vendor it has no build for (one line naming both and where the stack runs)."""
    reason = None if stack is None else not_run_reason(stack, vendor, system)
    if reason is not None:
        raise ConfigError(reason)


def request_fixed_s(stack: str | None, family: str, disaggregated: bool) -> float:
    """A stack's fixed time per request before its first token: the front end, plus the hand-off handshake
    where prefill and decode are split (0 for no stack)."""
    costs = stack_costs(stack, family)
    if costs is None:
        return 0.0
    return costs.request_s + (costs.handoff_s if disaggregated else 0.0)


def stack_costs(stack: str | None, family: str) -> StackCosts | None:
    """A stack's costs on a chip family (its ``default`` where the family has no entry); None for no stack."""
    return None if stack is None else load_stack(stack).costs(family)


def stack_indexer_precision(stack: str | None) -> str | None:
    """The format a stack's DSA indexer runs in where its kernel fixes one (None: the chip's lowest)."""
    return None if stack is None else load_stack(stack).defaults.indexer_precision


def stack_graph(stack: str | None) -> GraphExecution | None:
    """A stack's device-graph execution costs (None: no stack, or launches hidden and no per-op cost), as
    overridden inside ``overridden_costs``."""
    if stack is None:
        return None
    overrides = _OVERRIDES.get()
    found = overrides.get((stack, GRAPH_ENTRY)) if overrides else None
    return found if isinstance(found, GraphExecution) else load_stack(stack).graph


GATHERED_GROUPED = "grouped_gathered"  # a stack's list for a MoE without all-to-all dispatch (TP experts)


def stack_kernels(stack: str | None, family: str, op: str, gathered: bool = False) -> tuple[str, ...]:
    """The kernels a stack picks from for ``op`` (a GEMM's, or ``attention``) on a chip family (empty: not
    stated). A MoE whose tokens reach its experts without an all-to-all dispatch (``gathered``: TP experts
    under an all-reduce or all-gather, or every expert on the die) runs the engine's kernels for that layout
    where it lists them (``grouped_gathered``: SGLang's Triton fused_moe, where its DeepEP path runs DeepGEMM)."""
    if stack is None:
        return ()
    lists = load_stack(stack).costs(family).kernels
    if gathered and op == "grouped" and GATHERED_GROUPED in lists:
        return tuple(lists[GATHERED_GROUPED])
    return tuple(lists.get(op, ()))
