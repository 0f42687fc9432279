"""The fast path: each surviving candidate priced by the analytic estimate. A pure function of plain data,
so the single-process path and every Ray task compute exactly the same numbers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import Estimate, estimate
from cloudmatrix.planner.inputs import PlanRequest, PlanWorkload, context
from cloudmatrix.planner.space import Candidate


@dataclass(frozen=True, kw_only=True)
class Job:
    """What a worker needs to rebuild the costing context (strings and numbers only)."""

    system: str
    model: str
    overrides: tuple[str, ...]
    input_len: int
    output_len: int
    mtp_acceptance: float
    stack: str | None = None  # serving stack whose host time the plan prices (the system's published one)


def job_for(request: PlanRequest, w: PlanWorkload) -> Job:
    return Job(
        system=request.system,
        model=request.model,
        overrides=request.hardware_overrides,
        input_len=round(w.input_len),
        output_len=round(w.output_len),
        mtp_acceptance=request.mtp_acceptance,
        stack=request.stack or default_stack(request.system),
    )


@dataclass(frozen=True, kw_only=True)
class CandidateCost:
    candidate: Candidate
    feasible: bool
    reason: str = ""  # why the estimate refused it (the error's message)
    step_s: float = 0.0  # decode step or prefill batch at the candidate's batch
    tok_s_per_chip: float = 0.0  # decode: output tokens; prefill: prompt tokens
    tpot_s: float = 0.0  # decode
    lone_prompt_s: float = 0.0  # prefill: one prompt alone on the instance (the TTFT floor)
    busy: float = 0.0  # the step's speed-of-light share: the power model's load of a saturated instance


def _cached(cache: dict[Deployment, Estimate], hw: Hardware, model: ModelSpec, d: Deployment) -> Estimate:
    if d not in cache:  # prefill candidates that differ only in their batch share the lone-prompt shape
        cache[d] = estimate(hw, model, d)
    return cache[d]


def cost_one(job: Job, c: Candidate, cache: dict[Deployment, Estimate]) -> CandidateCost:
    hw, model = context(job.system, job.model, job.overrides)
    try:
        est = _cached(cache, hw, model, c.deployment(job.input_len, job.output_len, job.mtp_acceptance, job.stack))
        lone = 0.0
        if c.phase == Phase.PREFILL:
            one = dataclasses.replace(c, tokens_per_chip=max(math.ceil(job.input_len / c.chips), 1))
            lone = _cached(cache, hw, model, one.deployment(job.input_len, job.output_len, 0.0, job.stack)).step.step_s
    except CloudMatrixError as e:
        return CandidateCost(candidate=c, feasible=False, reason=str(e))
    return CandidateCost(
        candidate=c,
        feasible=True,
        step_s=est.step.step_s,
        tok_s_per_chip=est.throughput_per_chip_tok_s,
        tpot_s=est.tpot_s if c.phase == Phase.DECODE else 0.0,
        lone_prompt_s=lone,
        busy=min(1.0, est.step.roofline_step_s / est.step.step_s),
    )


def cost_candidates(
    job: Job, candidates: Sequence[Candidate], progress: Callable[[int, int], None] | None = None
) -> list[CandidateCost]:
    """Costs in candidate order."""
    cache: dict[Deployment, Estimate] = {}
    out = []
    for i, c in enumerate(candidates):
        out.append(cost_one(job, c, cache))
        if progress and (i + 1) % 64 == 0:
            progress(i + 1, len(candidates))
    return out


CURVE_PROMPTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def batch_curve(job: Job, c: Candidate) -> tuple[tuple[int, float], ...]:
    """A prefill instance's batch time against whole prompts per batch, up to its token budget: small
    batches cost more per prompt (weights read for few tokens, skewed expert load), which sets the batch
    an instance must run to keep pace with its arrivals."""
    hw, model = context(job.system, job.model, job.overrides)
    most = max(math.floor(c.tokens_per_chip * c.chips / job.input_len), 1)
    points = []
    for k in sorted({k for k in CURVE_PROMPTS if k < most} | {most}):
        tokens = max(math.ceil(k * job.input_len / c.chips), 1)
        dep = dataclasses.replace(c, tokens_per_chip=tokens).deployment(job.input_len, job.output_len, 0.0, job.stack)
        points.append((k, estimate(hw, model, dep).step.step_s))
    return tuple(points)
