"""Running one validation row the way it was measured: steady-state rows through ``estimate``, end-to-end rows
through ``simulate`` with the benchmark's closed-loop clients. Where the twin cannot express the published
layout it runs the nearest one it has and says so in the row's note; where it refuses, the reason is kept."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model
from cloudmatrix.catalog.sourced import describe_validation_error
from cloudmatrix.catalog.validation import BenchWorkload, RoleLayout, ValidationRow
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.deploy import Deployment, Eplb, Phase, acceptance_for_length, plan
from cloudmatrix.errors import CloudMatrixError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate
from cloudmatrix.inputs import InputError
from cloudmatrix.sim.costs import StepCosts
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.metrics import SimResult
from cloudmatrix.sim.scenario import Scenario

MIN_CHUNK_TOKENS = 16  # the simulation's smallest chunk per chip (sim/scenario.py)
TWIN_PRECISION = {"nvfp4": "fp4", "mxfp4": "fp4", "fp8": "fp8", "int8": "int8", "bf16": "bf16", "int4": "int4"}


@dataclass(frozen=True, kw_only=True)
class RowOutcome:
    """The twin's values for one row's measured metrics, or the reason it refused."""

    row_id: str
    predicted: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    note: str = ""

    @property
    def status(self) -> str:
        return "refused" if self.reason else "ok"


def run_row(row: ValidationRow) -> RowOutcome:
    """Never raises: a refusal (infeasible, unsupported, unknown id) or an internal fault becomes the reason."""
    notes: list[str] = []
    try:
        model = load_model(row.model)
        predicted = _e2e(row, model, notes) if row.kind == "e2e" else _steady(row, model, notes)
    except CloudMatrixError as e:
        return RowOutcome(row_id=row.id, reason=_one_line(str(e)), note="; ".join(notes))
    except ValidationError as e:  # the row's run as a scenario, outside the simulation's bounds
        return RowOutcome(row_id=row.id, reason=f"scenario {describe_validation_error(e)}", note="; ".join(notes))
    except Exception as e:  # a fault of the twin on one row must not lose the other rows' answers
        reason = _one_line(f"internal error: {type(e).__name__}: {e}")
        return RowOutcome(row_id=row.id, reason=reason, note="; ".join(notes))
    bad = [m for m, v in predicted.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        return RowOutcome(row_id=row.id, reason=f"no finite {bad[0]} (nothing was measured by the run)")
    return RowOutcome(row_id=row.id, predicted=predicted, note="; ".join(notes))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_ranks(row: ValidationRow, layout: RoleLayout, role: str) -> int:
    """The role's dies, once its instance is known to fit in the system and its TP and EP ranks in its dies:
    more ranks than dies is no layout (never clamped to the dies there are)."""
    hw = load_hardware(row.system)
    if layout.chips > hw.system.num_chips:
        raise InputError(
            f"{role}.chips: got {layout.chips}; expected at most the {hw.system.num_chips} chips of {row.system}"
        )
    dies = layout.chips * hw.chip.num_dies
    for name in ("tp", "ep", "cp"):
        ranks = getattr(layout, name)
        if ranks > dies:
            raise InputError(
                f"{role}.{name}: got {ranks}; expected at most the {dies} dies of {layout.chips} {row.system} chips"
            )
    return dies


def twin_layout(
    row: ValidationRow, layout: RoleLayout, model: ModelSpec, notes: list[str], role: str
) -> dict[str, Any]:
    """The twin's layout fields for a published one. Published TP/EP sizes count ranks, which are dies (one
    per NVIDIA GPU, two per 910C), and never exceed the role's dies. Attention is TP over ``tp`` ranks unless
    DP attention is on; experts are EP over ``ep`` ranks, each expert split over the instance's remaining
    dies (expert TP, as SGLang, vLLM and TensorRT-LLM derive it from TP / EP), so TP x DP and EP x expert TP
    are the role's dies. A layout that does not tile them runs as the nearest one that does, noted."""
    dies = check_ranks(row, layout, role)
    if layout.cp > 1:  # CP ranks run the whole attention on their share of each prompt: attention TP 1
        return {"tp": 1, "cp": layout.cp, **_experts(row, layout, model, notes, role, dies, 1)}
    group = attention_group(layout, role)
    if layout.dp_attention and role == "prefill" and group > 1:
        # DP attention with a TP group per DP rank on scattered inputs: down-projections on each die's own
        # tokens, up-projections and heads split over the group (the twin's SP-TP-SP prefill)
        fields = twin_layout(row, layout.model_copy(update={"dp": None}), model, notes, role)
        return {**fields, "attention_tp": group}
    tp = group if layout.dp_attention else layout.tp
    if dies % tp or model.attention.num_heads % tp:
        notes.append(
            f"{role}: TP{tp} attention does not tile {dies} dies and {model.attention.num_heads} heads; runs as DP"
        )
        tp = 1
    return {"tp": tp, **_experts(row, layout, model, notes, role, dies, tp)}


def _experts(
    row: ValidationRow, layout: RoleLayout, model: ModelSpec, notes: list[str], role: str, dies: int, tp: int
) -> dict[str, Any]:
    """EP over the published ranks, each expert split over the rest (none for a dense model)."""
    if model.moe is None:
        return {}
    ep = layout.ep
    if dies % ep or model.moe.intermediate % (dies // ep) or (tp > 1 and dies % tp):
        notes.append(f"{role}: EP{ep} does not tile {dies} dies; experts run as EP{dies}")
        ep = dies
    return {"ep": ep, "moe_tp": dies // ep}


def launched_reserve(row: ValidationRow, layout: RoleLayout) -> float | None:
    """The HBM per die a pool's launched memory setting keeps back (of all HBM), where the row states it."""
    if layout.memory_fraction is None:
        return None
    return (1.0 - layout.memory_fraction) * load_hardware(row.system).chip.die.hbm_gb.value


def attention_group(layout: RoleLayout, role: str) -> int:
    """Dies of one DP attention group (SGLang: tp_size / dp_size; one die when DP is not stated)."""
    if not layout.dp_attention or layout.dp is None:
        return 1
    if layout.tp % layout.dp:
        raise InputError(f"{role}.dp: got {layout.dp}; expected a divisor of {role}.tp {layout.tp}")
    return layout.tp // layout.dp


def redundant_experts(row: ValidationRow) -> int | None:
    """A stack without EPLB places no redundant expert copies; with EPLB the layout's default applies."""
    return 0 if row.eplb == "none" else None


def _lengths(length: int, ratio: float) -> dict[str, Any]:
    if ratio >= 1.0:
        return {"kind": "fixed", "value": length}
    return {"kind": "uniform", "low": max(int(length * ratio), 1), "high": length}


def _batch_cap(layout: RoleLayout, concurrency: int, chips: int) -> int:
    """Sequences per chip the pool admits: the stack's cap where published, else room for every client."""
    if layout.max_batch_per_chip is not None:
        return layout.max_batch_per_chip
    return max(math.ceil(concurrency / chips), 1)


def _arrivals(w: BenchWorkload) -> dict[str, Any]:
    """The benchmark's clients (closed loop), its Poisson rate, or its rate capped at its clients in flight."""
    if w.rate_per_s is None:
        return {"kind": "closed", "concurrency": w.concurrency}
    if w.concurrency is None:
        return {"kind": "poisson", "rate_per_s": w.rate_per_s}
    return {"kind": "poisson", "rate_per_s": w.rate_per_s, "concurrency": w.concurrency}


def scenario_for(row: ValidationRow, model: ModelSpec, notes: list[str]) -> Scenario:
    """The scenario that replays an end-to-end row: its pools, formats and closed-loop workload."""
    w = row.workload
    clients = w.concurrency or 1
    data: dict[str, Any] = {
        "name": row.id,
        "system": row.system,
        "stack": row.stack,
        "model": row.model,
        "precision": TWIN_PRECISION[row.weights],
        "activation_precision": TWIN_PRECISION[row.activations],
        "kv_precision": TWIN_PRECISION[row.kv],
        "workload": {
            "input": _lengths(w.input_len, w.range_ratio),
            "output": _lengths(w.output_len, w.range_ratio),
            "arrivals": _arrivals(w),
        },
        "requests": w.num_requests or 10 * clients,
        "seed": 0,
        "kernels": row.kernels,
    }
    # budgets the source leaves unpublished take the scenario schema's defaults
    mtp = {"mtp": row.mtp, "mtp_acceptance": row_acceptance(row), "mtp_spread": row.mtp_spread if row.mtp else 0.0}

    def pool(layout: RoleLayout, role: str) -> dict[str, Any]:
        """What every pool takes from its published layout: its size, layout and expert placement."""
        return {
            "instances": layout.instances,
            "chips": layout.chips,
            **twin_layout(row, layout, model, notes, role),
            "eplb": row.eplb,
            "redundant_experts": redundant_experts(row),
            "reserve_gb": launched_reserve(row, layout),
            **microbatch_of(layout),
        }

    if row.aggregated is not None:
        a = row.aggregated
        data["aggregated"] = {
            **pool(a, "aggregated"),
            "batch_per_chip": _batch_cap(a, clients, a.chips * a.instances),
            **({"chunk_tokens_per_chip": _chunk(a.chunk_tokens_per_chip, notes)} if a.chunk_tokens_per_chip else {}),
            **({"recv_interval": a.recv_interval} if a.recv_interval else {}),
            **({"attention_dp_balance": a.attention_dp_balance.model_dump()} if a.attention_dp_balance else {}),
            **mtp,
        }
    else:
        p, d = row.prefill, row.decode
        assert p is not None and d is not None
        data["prefill"] = {
            # DP or Megatron-style TP attention, unless the layout names DP attention groups of several dies
            "attention_tp": 1,
            **pool(p, "prefill"),
            **prefill_budget(p, w.input_len, notes),
            "microbatch": p.microbatch,
        }
        data["decode"] = {**pool(d, "decode"), "batch_per_chip": _batch_cap(d, clients, d.chips * d.instances), **mtp}
    return Scenario.model_validate(data)


def microbatch_of(layout: RoleLayout) -> dict[str, bool]:
    """The pool's microbatch setting where the row states it (the engine's launch), else nothing: the twin's
    default (the faster graph) applies."""
    return {} if layout.microbatch is None else {"microbatch": layout.microbatch}


def prefill_budget(layout: RoleLayout, input_len: int, notes: list[str]) -> dict[str, int]:
    """A prefill pool's prompt tokens per chip per batch: its published budget, capped at the prompts its
    running-request cap lets it prefill at once (noted where the cap binds)."""
    budget = layout.chunk_tokens_per_chip
    if layout.max_running is not None:
        cap = layout.max_running * input_len / layout.chips
        if budget is None or cap < budget:
            notes.append(f"prefill: {layout.max_running} running requests cap a batch at {cap:,.0f} tokens per chip")
            budget = cap
    return {"tokens_per_chip": max(int(budget), 1)} if budget else {}


def _chunk(tokens_per_chip: float, notes: list[str]) -> int:
    """An aggregated pool's chunk budget in whole tokens per chip, at least the simulation's 16 (noted)."""
    if tokens_per_chip < MIN_CHUNK_TOKENS:
        notes.append(
            f"aggregated: a chunk of {tokens_per_chip:g} tokens per chip runs as {MIN_CHUNK_TOKENS} "
            "(the simulation's smallest)"
        )
    return max(int(tokens_per_chip), MIN_CHUNK_TOKENS)


def fit_memory(scenario: Scenario, notes: list[str]) -> Scenario:
    """A measured deployment ran, so the twin must not refuse it for memory. The twin reserves each
    sequence's KV for its whole length at admission (TensorRT-LLM's guaranteed-no-evict policy), where vLLM
    and SGLang allocate as sequences grow; so where the stack's memory setting leaves too little room, the
    chip's own runtime reserve applies instead. Where even that cannot hold the measured batch, the server
    admits what its KV holds and queues the rest. Both are noted."""
    if _fits(scenario):
        return scenario
    reserve = StepCosts(scenario).hw.chip.runtime_reserve_gb.value
    roomy = scenario.model_copy(
        update={
            name: getattr(scenario, name).model_copy(update={"reserve_gb": reserve})
            for name in ("prefill", "decode", "aggregated")
            if getattr(scenario, name) is not None
        }
    )
    notes.append(
        f"KV for every sequence's whole length needs more than the stack's memory setting leaves: "
        f"runs with the chip's {reserve:g} GB runtime reserve"
    )
    if _fits(roomy):
        return roomy
    role = "aggregated" if roomy.aggregated is not None else "decode"
    costs = StepCosts(roomy)
    cap = math.floor(memory_use(plan(costs.decode_deployment(), costs.hw, costs.model)).max_batch_per_chip)
    if cap >= 1:
        notes.append(f"{role}: KV holds {cap} sequences per chip; the rest queue")
        pool = getattr(roomy, role)
        return roomy.model_copy(update={role: pool.model_copy(update={"batch_per_chip": cap})})
    return roomy


def _fits(scenario: Scenario) -> bool:
    try:
        StepCosts(scenario).check()
    except InfeasibleDeploymentError:
        return False
    return True


def _e2e(row: ValidationRow, model: ModelSpec, notes: list[str]) -> dict[str, float]:
    result = simulate(fit_memory(scenario_for(row, model, notes), notes))
    return {m: v for m, v in e2e_metrics(result, row.disaggregated).items() if m in row.measured}


def e2e_metrics(result: SimResult, disaggregated: bool) -> dict[str, float]:
    """The benchmark client's figures: throughput over first send to last finish (per decode chip for
    output when disaggregated, per chip otherwise), median TPOT and TTFT, p99 TTFT."""
    t = result.table
    done = result.done_ids()
    span = result.sim_time_s
    if not done.size or span <= 0:
        return {"output_tok_s_per_chip": math.nan}
    out_tokens, in_tokens = float(t.output_len[done].sum()), float(t.input_len[done].sum())
    all_chips = result.decode_chips + (result.prefill_chips if disaggregated else 0)
    ttft, tpot = result.ttft_s() * 1e3, result.tpot_s() * 1e3
    return {
        "output_tok_s_per_chip": out_tokens / span / (result.decode_chips if disaggregated else all_chips),
        "tok_s_per_chip": (in_tokens + out_tokens) / span / all_chips,
        "tpot_ms": float(np.median(tpot)),
        "ttft_ms": float(np.median(ttft)),
        "p99_ttft_ms": float(np.percentile(ttft, 99)),
    }


def row_acceptance(row: ValidationRow) -> float:
    """The row's acceptance per draft token: as given, or the one its published accept length implies."""
    if row.accept_length is not None:
        return acceptance_for_length(row.mtp, row.accept_length)
    return row.mtp_acceptance or 0.0


def _steady(row: ValidationRow, model: ModelSpec, notes: list[str]) -> dict[str, float]:
    w = row.workload
    layout = row.decode if row.kind == "decode" else row.prefill
    assert layout is not None
    dep = Deployment(
        phase=Phase(row.kind),
        num_chips=layout.chips,
        **twin_layout(row, layout, model, notes, row.kind),
        batch_per_chip=w.batch_per_chip,
        tokens_per_chip=w.tokens_per_chip,
        input_len=w.input_len,
        output_len=w.output_len,
        kv_len=w.kv_len,
        precision=TWIN_PRECISION[row.weights],
        activation_precision=TWIN_PRECISION[row.activations],
        kv_precision=TWIN_PRECISION[row.kv],
        mtp=row.mtp,
        mtp_acceptance=row_acceptance(row),
        speculation=row.speculation,
        draft_topk=row.draft_topk,
        verify_tokens=row.verify_tokens,
        eplb=Eplb(row.eplb),
        redundant_experts=redundant_experts(row),
        stack=row.stack,
        kernels=tuple(row.kernels),
        reserve_gb=launched_reserve(row, layout),
        microbatch=layout.microbatch,
    )
    try:
        est = estimate(row.system, model, dep)
    except InfeasibleDeploymentError:  # it ran: its memory setting was above the stack's default
        dep = dataclasses.replace(dep, reserve_gb=load_hardware(row.system).chip.runtime_reserve_gb.value)
        est = estimate(row.system, model, dep)
        notes.append(
            f"does not fit the stack's memory setting: runs with the chip's {dep.reserve_gb:g} GB runtime reserve"
        )
    values = {"throughput_per_chip_tok_s": est.throughput_per_chip_tok_s, "tpot_ms": est.tpot_s * 1e3}
    return {m: v for m, v in values.items() if m in row.measured}
