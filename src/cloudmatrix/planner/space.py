"""The search space: prefill and decode instance candidates on one system, enumerated in a fixed order, with
the cheap feasibility checks (chip count, divisibility, HBM) applied before anything is costed."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.deploy import BYTES_PER_ELEMENT, DEFAULT_ATTENTION_TP, Deployment, Eplb, Phase, kv_group, plan
from cloudmatrix.errors import CloudMatrixError, ConfigError
from cloudmatrix.sim.scenario import PrefillPool

# Instance sizes in nodes: prefill instances stay small (the paper's 16 NPUs = 2 nodes), decode instances
# span from two nodes up to most of a supernode (the paper's 160 NPUs = 20 nodes).
PREFILL_NODES = (1, 2, 4, 8)
DECODE_NODES = (2, 4, 6, 8, 12, 16, 20, 24, 32)
NATIVE_PRECISIONS = ("fp8", "int8", "fp4", "bf16")  # where two cost the same, the first is kept
# Prefill is priced with the expert-load balance the simulation's prefill pools use, so that a check
# compares like with like (decode uses EPLB as deployed, the pools' default too).
PREFILL_EPLB = Eplb(PrefillPool.model_fields["eplb"].default)


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The axes of the search. ``None`` sizes and precisions are derived from the system."""

    prefill_chips: tuple[int, ...] | None = None
    decode_chips: tuple[int, ...] | None = None
    ep_divisors: tuple[int, ...] = (1, 2)  # EP = dies / d: one expert group, or two replicas of it
    batches_per_chip: tuple[int, ...] = (2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 104, 112, 128, 160, 192)
    tokens_per_chip: tuple[int, ...] = (4096, 8192, 16384)
    attention_tp: tuple[int, ...] = (1, 2, 4, 8)  # MoE/MLA prefill SP-TP-SP group; their decode attention is DP
    dense_tp: tuple[int, ...] = (1, 2, 4, 8, 16)  # dense models: tensor-parallel group, prefill and decode
    mtp_depths: tuple[int, ...] = (0, 1)
    context_parallel: tuple[int, ...] = (1,)  # prefill CP groups (dies); a degree over the instance is skipped
    microbatch: tuple[bool, ...] = (True, False)
    precisions: tuple[str, ...] | None = None  # default: every precision the die runs natively


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One instance configuration of one role; the pool sizes come later, from rate matching."""

    phase: Phase
    precision: str
    chips: int
    ep: int | None
    microbatch: bool
    batch_per_chip: int = 0  # decode
    mtp: int = 0  # decode
    tokens_per_chip: int = 0  # prefill
    attention_tp: int = DEFAULT_ATTENTION_TP  # prefill
    tp: int = 1  # dense models: tensor-parallel group
    cp: int = 1  # prefill context parallelism
    shared_dies: int | None = None  # decode: a published layout's shared-expert dies (None: the layout rule)

    @property
    def kv_group(self) -> int:
        """Dies that hold a prefilled prompt's KV, and so the NICs its hand-off to decode is striped over."""
        return kv_group(self.tp, self.attention_tp, self.cp)

    def deployment(
        self, input_len: int, output_len: int, mtp_acceptance: float, stack: str | None = None
    ) -> Deployment:
        """The candidate as a deployment; ``stack`` adds that serving stack's host time per step."""
        if self.phase == Phase.PREFILL:
            return Deployment(
                phase=Phase.PREFILL,
                num_chips=self.chips,
                ep=self.ep,
                tokens_per_chip=self.tokens_per_chip,
                input_len=input_len,
                precision=self.precision,
                microbatch=self.microbatch,
                attention_tp=self.attention_tp,
                eplb=PREFILL_EPLB,
                tp=self.tp,
                cp=self.cp,
                stack=stack,
            )
        return Deployment(
            phase=Phase.DECODE,
            num_chips=self.chips,
            ep=self.ep,
            batch_per_chip=self.batch_per_chip,
            input_len=input_len,
            output_len=output_len,
            precision=self.precision,
            mtp=self.mtp,
            mtp_acceptance=mtp_acceptance if self.mtp else 0.0,
            eplb=Eplb.DEFAULT,
            microbatch=self.microbatch,
            tp=self.tp,
            shared_dies=self.shared_dies,
            stack=stack,
        )

    def label(self) -> str:
        ep = f"EP{self.ep}" if self.ep else "dense"
        mb = "mb" if self.microbatch else "serial"
        if self.phase == Phase.PREFILL:
            cp = f" CP{self.cp}" if self.cp > 1 else ""
            group = kv_group(self.tp, self.attention_tp)
            return f"{self.chips}c {ep} TP{group}{cp} {self.tokens_per_chip // 1024}K/chip {mb}"
        tp = f" TP{self.tp}" if self.tp > 1 else ""
        return f"{self.chips}c {ep}{tp} b{self.batch_per_chip} MTP{self.mtp} {mb}"


def precisions(hw: Hardware, space: SearchSpace) -> tuple[str, ...]:
    """The precisions to search, in order. Two that cost the same on this die (the same peak and bytes per
    element, e.g. INT8 and FP8 on Hopper) would only repeat the search: the first is kept."""
    names = space.precisions
    if names is None:
        names = tuple(p for p in NATIVE_PRECISIONS if p in hw.chip.die.peak_tflops)
    for p in names:
        if p not in BYTES_PER_ELEMENT:
            raise ConfigError(f"precision '{p}' is not one of: {', '.join(BYTES_PER_ELEMENT)}")
    distinct: dict[tuple[float, float], str] = {}
    for p in names:
        distinct.setdefault((hw.chip.die.peak_flops(p), BYTES_PER_ELEMENT[p]), p)
    return tuple(distinct.values())


def instance_sizes(hw: Hardware, nodes: tuple[int, ...]) -> tuple[int, ...]:
    per_node = int(hw.system.chips_per_node.value)
    return tuple(n * per_node for n in nodes if n * per_node <= hw.system.num_chips)


def role_sizes(hw: Hardware, space: SearchSpace) -> dict[Phase, tuple[int, ...]]:
    """Chips per instance of each role: the space's own, else whole nodes from the defaults."""
    return {
        Phase.PREFILL: space.prefill_chips or instance_sizes(hw, PREFILL_NODES),
        Phase.DECODE: space.decode_chips or instance_sizes(hw, DECODE_NODES),
    }


def _eps(hw: Hardware, model: ModelSpec, chips: int, space: SearchSpace) -> Sequence[int | None]:
    if model.moe is None:
        return [None]
    dies = chips * hw.chip.num_dies
    return sorted({dies // d for d in space.ep_divisors if dies % d == 0}, reverse=True)


def enumerate_candidates(hw: Hardware, model: ModelSpec, space: SearchSpace) -> list[Candidate]:
    """Every combination of the axes, in a fixed order (the order results and ties are reported in)."""
    sizes = role_sizes(hw, space)
    # MLA/MoE models shard prefill attention SP-TP-SP; dense models use tensor parallelism in both roles
    dense = model.moe is None
    attention_tp, tps = ((1,), space.dense_tp) if dense else (space.attention_tp, (1,))
    out: list[Candidate] = []
    for prec in precisions(hw, space):
        for chips in sizes[Phase.PREFILL]:
            cps = [cp for cp in space.context_parallel if (chips * hw.chip.num_dies) % cp == 0]
            prefill_axes = product(
                _eps(hw, model, chips, space), attention_tp, space.tokens_per_chip, space.microbatch, tps, cps
            )
            out += [
                Candidate(
                    phase=Phase.PREFILL,
                    precision=prec,
                    chips=chips,
                    ep=ep,
                    microbatch=mb,
                    tokens_per_chip=tokens,
                    attention_tp=atp,
                    tp=tp,
                    cp=cp,
                )
                for ep, atp, tokens, mb, tp, cp in prefill_axes
            ]
        for chips in sizes[Phase.DECODE]:
            axes = product(
                _eps(hw, model, chips, space), space.batches_per_chip, space.mtp_depths, space.microbatch, tps
            )
            out += [
                Candidate(
                    phase=Phase.DECODE,
                    precision=prec,
                    chips=chips,
                    ep=ep,
                    microbatch=mb,
                    batch_per_chip=batch,
                    mtp=mtp,
                    tp=tp,
                )
                for ep, batch, mtp, mb, tp in axes
            ]
    return out


def error_reason(message: str) -> str:
    """A count key for a refusal: the message's first clause with its numbers blanked, so refusals of the
    same kind are counted together (``EP degree N must divide the N dies of N chips``)."""
    return re.sub(r"\d[\d.,]*", "N", message.split(":", 1)[0]).strip()


def prune_reason(
    c: Candidate, hw: Hardware, model: ModelSpec, budget_chips: int, input_len: int, output_len: int, other_chips: int
) -> str | None:
    """Why a candidate cannot run, from checks far cheaper than costing it (None: it may run).
    ``other_chips`` is the other role's smallest instance in this search (0: it has none)."""
    if not other_chips or c.chips + other_chips > budget_chips:
        return "chips"  # no room left for the other role's smallest instance
    dies = c.chips * hw.chip.num_dies
    if c.phase == Phase.DECODE and c.batch_per_chip % hw.chip.num_dies:
        return "divisibility"  # whole sequences per die
    if c.phase == Phase.PREFILL and (model.attention.num_heads % c.attention_tp or c.attention_tp > dies):
        return "divisibility"
    if c.tp > dies or dies % c.tp or model.attention.num_heads % c.tp:
        return "divisibility"
    if c.phase == Phase.PREFILL and _prompt_split(c, hw, input_len):
        return "prompt-split"
    if c.ep and dies % c.ep:
        return "divisibility"
    if c.mtp > model.mtp_layers:
        return "mtp"
    try:
        p = plan(c.deployment(input_len, output_len, 0.0), hw, model)
    except CloudMatrixError as e:
        return error_reason(str(e))
    if memory_use(p).total_bytes > hw.chip.hbm_bytes_per_die:
        return "memory"
    return None


def _prompt_split(c: Candidate, hw: Hardware, input_len: int) -> bool:
    """A prompt longer than the dies that share its KV (an SP-TP-SP or TP group, a CP group) hold in one
    batch would be computed by dies that never exchange its KV: the cost model prices no such step."""
    tokens_per_die = c.tokens_per_chip / hw.chip.num_dies
    return input_len > tokens_per_die * kv_group(c.tp, c.attention_tp, c.cp)


def feasible_candidates(
    hw: Hardware, model: ModelSpec, space: SearchSpace, budget_chips: int, input_len: int, output_len: int
) -> tuple[list[Candidate], list[Candidate], Counter[str]]:
    """(all enumerated, those that survive pruning, how many each check removed)."""
    everything = enumerate_candidates(hw, model, space)
    sizes = role_sizes(hw, space)
    other = {Phase.PREFILL: min(sizes[Phase.DECODE], default=0), Phase.DECODE: min(sizes[Phase.PREFILL], default=0)}
    pruned: Counter[str] = Counter()
    kept = []
    for c in everything:
        reason = prune_reason(c, hw, model, budget_chips, input_len, output_len, other[c.phase])
        if reason is None:
            kept.append(c)
        else:
            pruned[reason] += 1
    return everything, kept, pruned
