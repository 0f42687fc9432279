"""An AFD decode instance's steady-state estimate: the ping-pong step of ``cost/afd.py`` with both pools'
memory checked, its throughput per chip over both pools, and the same dies run without AFD for comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model
from cloudmatrix.cost.afd import AfdPlans, AfdStep, afd_plans, afd_step
from cloudmatrix.cost.afd_memory import check_pools_fit
from cloudmatrix.cost.memory import MemoryUse
from cloudmatrix.deploy import Deployment, mtp_tokens_per_step
from cloudmatrix.deployment import AfdDeployment

MS = 1e3


@dataclass(frozen=True, kw_only=True)
class AfdEstimate:
    afd: AfdDeployment
    plans: AfdPlans
    step: AfdStep
    attention_memory: MemoryUse
    ffn_memory: MemoryUse

    @property
    def accepted_per_step(self) -> float:
        a = self.afd.attention
        return mtp_tokens_per_step(a.mtp, a.mtp_acceptance)

    @property
    def tpot_s(self) -> float:
        return self.step.step_s / self.accepted_per_step

    @property
    def throughput_per_chip_tok_s(self) -> float:
        """Output tokens/s per chip over both pools' chips."""
        a = self.afd.attention
        assert a.batch_per_chip is not None
        tokens = a.batch_per_chip * a.num_chips * self.accepted_per_step
        return tokens / self.step.step_s / self.afd.num_chips

    def to_dict(self) -> dict[str, Any]:
        a, f = self.plans.attention, self.plans.ffn
        return {
            "system": a.hardware.system.id,
            "model": a.model.id,
            "phase": "decode",
            "afd": {
                "attention_chips": a.deployment.num_chips,
                "ffn_chips": f.deployment.num_chips,
                "ffn_ep": f.layout.ep if f.layout else None,
                "microbatches": self.afd.microbatches,
                "attention_precision": a.deployment.precision,
                "ffn_precision": f.deployment.precision,
                "plane": self.plans.role.value,
            },
            "chips": self.afd.num_chips,
            "batch_per_chip": a.deployment.batch_per_chip,  # sequences per attention chip
            "mtp": a.deployment.mtp,
            "mtp_acceptance": a.deployment.mtp_acceptance,
            "step_ms": self.step.step_s * MS,
            "tpot_ms": self.tpot_s * MS,
            "throughput_per_chip_tok_s": self.throughput_per_chip_tok_s,
            "utilisation": self.step.utilisation(),
            "breakdown_us": self.step.breakdown_us,
            "ffn_us": self.step.ffn_us,
            "crossing_us": self.step.crossing_us,
            "memory_per_die_gb": {"attention": self.attention_memory.as_gb(), "ffn": self.ffn_memory.as_gb()},
            "max_batch_per_chip_by_kv": self.attention_memory.max_batch_per_chip,
        }


def estimate_afd(system: str | Hardware, model: str | ModelSpec, afd: AfdDeployment) -> AfdEstimate:
    """Price one AFD decode step of ``afd`` for ``model`` on ``system``; raises CloudMatrixError on bad input."""
    hw = load_hardware(system) if isinstance(system, str) else system
    spec = load_model(model) if isinstance(model, str) else model
    plans = afd_plans(afd, hw, spec)
    attention, ffn = check_pools_fit(plans)
    return AfdEstimate(afd=afd, plans=plans, step=afd_step(plans), attention_memory=attention, ffn_memory=ffn)


def same_dies_decode(afd: AfdDeployment) -> Deployment:
    """The comparison without AFD: one decode instance on both pools' chips with the same sequences in
    flight (data-parallel attention and expert parallelism over every die, the faster microbatch graph)."""
    from dataclasses import replace

    a = afd.attention
    assert a.batch_per_chip is not None
    return replace(
        a,
        num_chips=afd.num_chips,
        ep=None,
        batch_per_chip=a.batch_per_chip * a.num_chips / afd.num_chips,
        tp=1,
        moe_tp=1,
        microbatch=None,
    )
