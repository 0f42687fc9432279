"""L4 steady-state analytic estimate of one instance: the fast path behind `estimate`, `reproduce` and
the planner. Pure: the same inputs give the same result."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model
from cloudmatrix.catalog.stack_loop import prompt_wait_steps, stack_overlaps
from cloudmatrix.cost.memory import MemoryUse, check_fits, memory_use
from cloudmatrix.cost.moe import expert_imbalance
from cloudmatrix.cost.shape_range import shape_reasons
from cloudmatrix.cost.step import StepCost, best_step_cost
from cloudmatrix.deploy import Deployment, Phase, Plan, mtp_tokens_per_step, plan
from cloudmatrix.frozen import fill_dict_init

MS, US = 1e3, 1e6


@fill_dict_init
@dataclass(frozen=True, kw_only=True)
class Estimate:
    plan: Plan
    step: StepCost
    memory: MemoryUse

    @property
    def tokens_per_step_per_chip(self) -> float:
        """Output tokens per decode step, or prompt tokens per prefill batch, per chip."""
        d = self.plan.deployment
        if self.plan.decodes:
            assert d.batch_per_chip is not None
            return d.batch_per_chip * mtp_tokens_per_step(d.mtp, d.mtp_acceptance)
        p = self.plan
        return (p.tokens_per_die + p.cached_tokens_per_die) * p.hardware.chip.num_dies / p.tp

    @property
    def throughput_per_chip_tok_s(self) -> float:
        return self.tokens_per_step_per_chip / self.step.step_s

    @property
    def prefill_tokens_per_chip_s(self) -> float:
        """Prompt tokens per chip per second: a prefill instance's throughput, or an aggregated one's chunks."""
        p = self.plan
        return p.chunk_tokens_per_die * p.hardware.chip.num_dies / p.tp / self.step.step_s

    @property
    def ttft_s(self) -> float | None:
        """Aggregated serving: the steps a prompt waits at the busy engine (its stack's scheduler loop,
        ``catalog.stack_loop.prompt_wait_steps``), then those it needs at the chunk rate of its die (no queueing)."""
        if self.plan.chunk_tokens_per_die <= 0:
            return None
        d = self.plan.deployment
        busy = (d.batch_per_chip or 0.0) > 0
        wait = prompt_wait_steps(stack_overlaps(d.stack, speculative=d.mtp > 0)) if busy else 0.0
        return (wait + math.ceil(d.input_len / self.plan.chunk_tokens_per_die)) * self.step.step_s

    @property
    def tpot_s(self) -> float:
        d = self.plan.deployment
        return self.step.step_s / mtp_tokens_per_step(d.mtp, d.mtp_acceptance)

    def to_dict(self) -> dict[str, Any]:
        p, d, s = self.plan, self.plan.deployment, self.step
        out: dict[str, Any] = {
            "system": p.hardware.system.id,
            "model": p.model.id,
            "phase": d.phase.value,
            "chips": d.num_chips,
            "dies": p.num_dies,
            "ep": p.layout.ep if p.layout else None,
            "precision": d.precision,
            "microbatch": s.microbatch,
            "step_ms": s.step_s * MS,
            "throughput_per_chip_tok_s": self.throughput_per_chip_tok_s,
            "tokens_per_step": self.tokens_per_step_per_chip,
            "memory_per_die_gb": self.memory.as_gb(),
            "breakdown_us": s.breakdown_us,
            "layer_breakdown_us": s.layer_breakdown_us,
            "overlapped_us": s.overlapped_us,
            "layer_us": s.layer_us,
            "roofline_us": s.roofline_us,
            "roofline_step_ms": s.roofline_step_s * 1e3,
            "roofline_binding": s.roofline_binding,
            # ops priced outside their kernel's measured shape (the intervals widen on these reasons)
            "shape_extrapolating": list(shape_reasons(p)),
        }
        if d.phase == Phase.AGGREGATED:
            out.update(
                chunk_tokens_per_chip=p.chunk_tokens_per_die * p.hardware.chip.num_dies / p.tp,
                prefill_tokens_per_chip_s=self.prefill_tokens_per_chip_s,
                ttft_ms=(self.ttft_s or 0.0) * MS,
            )
        if p.decodes:
            out.update(
                tpot_ms=self.tpot_s * MS,
                batch_per_chip=d.batch_per_chip,
                kv_len=p.kv_len,
                mtp=d.mtp,
                mtp_acceptance=d.mtp_acceptance,
                speculation=d.speculation,
                tp=d.tp,
                moe_tp=d.moe_tp,
                max_batch_per_chip_by_kv=self.memory.max_batch_per_chip,
            )
        else:
            out.update(
                batch_time_ms=s.step_s * MS, tokens_per_chip=self.tokens_per_step_per_chip, input_len=d.input_len
            )
        if p.layout:
            out["expert_layout"] = {
                "routed_slots_per_die": p.layout.routed_slots_per_die,
                "routed_dies": p.layout.routed_dies,
                "shared_dies": p.layout.shared_dies,
                "redundant": p.layout.redundant,
                "ep": p.layout.ep,
                "moe_tp": d.moe_tp,
                "moe_comm": p.moe_comm.value,
            }
            out["expert_load"] = {  # the whole step's batch; a microbatch's is a little larger
                "eplb": d.eplb.value,
                "routing": p.routing.describe(),
                "busiest_over_mean": expert_imbalance(p, p.tokens_per_die),
            }
        return out


def estimate(system: str | Hardware, model: str | ModelSpec, deployment: Deployment) -> Estimate:
    """Price one step of ``deployment`` for ``model`` on ``system`` (catalog ids, or specs for what-if
    studies); raises CloudMatrixError on bad input."""
    hw = load_hardware(system) if isinstance(system, str) else system
    spec = load_model(model) if isinstance(model, str) else model
    p = plan(deployment, hw, spec)
    mem = memory_use(p)
    check_fits(p, mem)
    return Estimate(plan=p, step=best_step_cost(p), memory=mem)


def pool_req_s(tok_s: float, length: float, role: str) -> float:
    """Requests/s a pool completes from its token rate: prompts for prefill; answers for decode, which emits
    output_len − 1 tokens per request (the first comes from prefill); whole answers for a co-located pool.
    `compare`, `plan` and the preset scenarios size pools with this one function."""
    if role == "decode":
        length = max(length - 1, 1)
    return tok_s / length if length > 0 else 0.0


def matched_output_tok_s_per_chip(
    prefill_req_s_per_chip: float, decode_req_s_per_chip: float, output_len: float
) -> float:
    """Output tokens/s per chip of prefill and decode pools sized in proportion so neither waits on the other
    (chips split 1/μ_p : 1/μ_d per request/s), at full load."""
    total = prefill_req_s_per_chip + decode_req_s_per_chip
    return prefill_req_s_per_chip * decode_req_s_per_chip / total * output_len if total > 0 else 0.0
