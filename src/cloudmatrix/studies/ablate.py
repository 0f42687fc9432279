"""`ablate`: switch CloudMatrix-Infer's optimisations off one at a time on the paper's deployment (P3 §5.4)
and report what each is worth in throughput and latency, from the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.reference import load_reference
from cloudmatrix.deploy import Eplb, Phase
from cloudmatrix.deployment import PAPER_SET, paper_deployments
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import Estimate, estimate

# (role, optimisation, what it becomes when switched off)
ABLATIONS: list[tuple[Phase, str, dict[str, Any]]] = [
    (Phase.DECODE, "microbatch pipeline (two streams)", {"microbatch": False}),
    (Phase.DECODE, "MTP (1 draft token)", {"mtp": 0, "mtp_acceptance": 0.0}),
    (Phase.DECODE, "EPLB (32 redundant experts)", {"eplb": Eplb.NONE}),
    (Phase.DECODE, "INT8 weights and dispatch", {"precision": "bf16"}),
    (Phase.PREFILL, "microbatch pipeline (SDMA overlap)", {"microbatch": False}),
    (Phase.PREFILL, "EPLB (1 redundant expert per die)", {"eplb": Eplb.NONE}),
    (Phase.PREFILL, "INT8 weights and dispatch", {"precision": "bf16"}),
    (Phase.PREFILL, "EMS context cache (50 % reuse)", {"cached_fraction": 0.0}),
    (Phase.PREFILL, "EMS over UB (instead of VPC)", {"cache_plane": "vpc"}),
]


def _latency_ms(est: Estimate) -> float:
    """TPOT for decode; the batch time (the TTFT of its prompts, queueing aside) for prefill."""
    return (est.tpot_s if est.plan.decodes else est.step.step_s) * 1e3


@dataclass(frozen=True, kw_only=True)
class AblationRow:
    phase: str
    optimisation: str
    off: dict[str, Any]
    throughput_on: float
    latency_on_ms: float
    throughput_off: float | None  # None: infeasible with the optimisation off
    latency_off_ms: float | None
    note: str = ""

    @property
    def throughput_gain_pct(self) -> float | None:
        """What the optimisation adds to throughput, relative to running without it."""
        if self.throughput_off is None:
            return None
        return (self.throughput_on / self.throughput_off - 1) * 100

    @property
    def latency_change_pct(self) -> float | None:
        if self.latency_off_ms is None:
            return None
        return (self.latency_on_ms / self.latency_off_ms - 1) * 100

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "off"}
        out["off"] = {k: str(v) for k, v in self.off.items()}
        out["throughput_gain_pct"] = self.throughput_gain_pct
        out["latency_change_pct"] = self.latency_change_pct
        return out


def ablate() -> list[AblationRow]:
    ref = load_reference(PAPER_SET)
    paper = paper_deployments()
    rows = []
    for phase, name, off in ABLATIONS:
        base = paper[phase]
        on = estimate(ref.system, ref.model, base)
        try:
            ablated: Estimate | None = estimate(ref.system, ref.model, dataclasses.replace(base, **off))
            note = ""
            if "microbatch" in off and base.microbatch is None and not on.step.microbatch:
                note = (
                    "the engine runs the faster of its two graphs, and at this batch the twin finds the one "
                    "without the pipeline faster (the paper measured a gain; docs/model.md §12)"
                )
        except CloudMatrixError as e:
            ablated, note = None, str(e)
        rows.append(
            AblationRow(
                phase=base.phase.value,
                optimisation=name,
                off=off,
                throughput_on=on.throughput_per_chip_tok_s,
                latency_on_ms=_latency_ms(on),
                throughput_off=ablated.throughput_per_chip_tok_s if ablated else None,
                latency_off_ms=_latency_ms(ablated) if ablated else None,
                note=note,
            )
        )
    return rows
