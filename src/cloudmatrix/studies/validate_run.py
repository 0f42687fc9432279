"""Running one validation row the way it was measured: steady-state rows through ``estimate``, end-to-end rows
through ``simulate`` with the benchmark's closed-loop clients. Where the twin cannot express the published
layout it runs the nearest one it has and says so in the row's note; where it refuses, the reason is kept."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model
from cloudmatrix.catalog.validation import RoleLayout, ValidationRow
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import estimate
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.metrics import SimResult
from cloudmatrix.sim.scenario import Scenario

TWIN_PRECISION = {"nvfp4": "fp4", "mxfp4": "fp4", "fp8": "fp8", "int8": "int8", "bf16": "bf16"}


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
        return RowOutcome(row_id=row.id, reason=str(e), note="; ".join(notes))
    except Exception as e:  # a fault of the twin on one row must not lose the other rows' answers
        return RowOutcome(row_id=row.id, reason=f"internal error: {type(e).__name__}: {e}", note="; ".join(notes))
    bad = [m for m, v in predicted.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        return RowOutcome(row_id=row.id, reason=f"no finite {bad[0]} (nothing was measured by the run)")
    return RowOutcome(row_id=row.id, predicted=predicted, note="; ".join(notes))


def twin_ep(row: ValidationRow, layout: RoleLayout, model: ModelSpec, notes: list[str], role: str) -> int | None:
    """The EP degree the twin runs for a published layout. MoE experts are expert-parallel over every die of
    the instance in the twin, with data-parallel attention; TP attention and TP-sharded experts are not
    modelled yet, so they run as EP over the instance's dies (noted): per die the same expert weights.
    Published TP/EP sizes count ranks, which are dies (one per NVIDIA GPU, two per 910C)."""
    if model.moe is None:
        return None
    dies = ep = layout.chips * load_hardware(row.system).chip.num_dies
    if layout.ep < dies:  # EP1 (TP experts) or EPn x TPm: each die holds 1/dies of the experts either way
        notes.append(f"{role}: EP{layout.ep} x TP{dies // layout.ep} experts run as EP{dies}")
    if layout.tp > 1 and not layout.dp_attention:
        notes.append(f"{role}: TP{layout.tp} attention runs as DP")
    return ep


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
        return max(int(layout.max_batch_per_chip), 1)
    return max(math.ceil(concurrency / chips), 1)


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
        "kv_precision": TWIN_PRECISION[row.kv],
        "workload": {
            "input": _lengths(w.input_len, w.range_ratio),
            "output": _lengths(w.output_len, w.range_ratio),
            "arrivals": (
                {"kind": "closed", "concurrency": clients}
                if w.concurrency
                else {"kind": "poisson", "rate_per_s": w.rate_per_s}
            ),
        },
        "requests": w.num_requests or 10 * clients,
        "seed": 0,
    }
    # budgets the source leaves unpublished take the scenario schema's defaults
    mtp = {"mtp": row.mtp, "mtp_acceptance": row.mtp_acceptance or 0.0}
    redundant = redundant_experts(row)
    if row.aggregated is not None:
        a = row.aggregated
        data["aggregated"] = {
            "instances": a.instances,
            "chips": a.chips,
            "ep": twin_ep(row, a, model, notes, "aggregated"),
            "batch_per_chip": _batch_cap(a, clients, a.chips * a.instances),
            **({"chunk_tokens_per_chip": max(int(a.chunk_tokens_per_chip), 16)} if a.chunk_tokens_per_chip else {}),
            "eplb": row.eplb,
            "redundant_experts": redundant,
            **mtp,
        }
    else:
        p, d = row.prefill, row.decode
        assert p is not None and d is not None
        heads = model.attention.num_heads
        data["prefill"] = {
            "instances": p.instances,
            "chips": p.chips,
            "ep": twin_ep(row, p, model, notes, "prefill"),
            **({"tokens_per_chip": int(p.chunk_tokens_per_chip)} if p.chunk_tokens_per_chip else {}),
            "microbatch": None,
            "attention_tp": p.tp if heads % p.tp == 0 else 1,
            "eplb": row.eplb,
            "redundant_experts": redundant,
        }
        data["decode"] = {
            "instances": d.instances,
            "chips": d.chips,
            "ep": twin_ep(row, d, model, notes, "decode"),
            "batch_per_chip": _batch_cap(d, clients, d.chips * d.instances),
            "eplb": row.eplb,
            "redundant_experts": redundant,
            **mtp,
        }
    return Scenario.model_validate(data)


def _e2e(row: ValidationRow, model: ModelSpec, notes: list[str]) -> dict[str, float]:
    result = simulate(scenario_for(row, model, notes))
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


def _steady(row: ValidationRow, model: ModelSpec, notes: list[str]) -> dict[str, float]:
    w = row.workload
    layout = row.decode if row.kind == "decode" else row.prefill
    assert layout is not None
    dep = Deployment(
        phase=Phase(row.kind),
        num_chips=layout.chips,
        ep=twin_ep(row, layout, model, notes, row.kind),
        batch_per_chip=w.batch_per_chip,
        tokens_per_chip=w.tokens_per_chip,
        input_len=w.input_len,
        output_len=w.output_len,
        kv_len=w.kv_len,
        precision=TWIN_PRECISION[row.weights],
        kv_precision=TWIN_PRECISION[row.kv],
        mtp=row.mtp,
        mtp_acceptance=row.mtp_acceptance or 0.0,
        eplb=Eplb(row.eplb),
        redundant_experts=redundant_experts(row),
        stack=row.stack,
    )
    est = estimate(row.system, model, dep)
    values = {"throughput_per_chip_tok_s": est.throughput_per_chip_tok_s, "tpot_ms": est.tpot_s * 1e3}
    return {m: v for m, v in values.items() if m in row.measured}
