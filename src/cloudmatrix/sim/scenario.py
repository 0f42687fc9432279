"""Scenario files: system, model, deployment by role, workload, SLOs, length of the run and seed. Validated
with pydantic so every error names its field path; ``--set a.b=value`` overrides apply before validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from cloudmatrix.catalog.overrides import apply_assignment
from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.catalog.sourced import describe_validation_error, read_yaml
from cloudmatrix.catalog.stack_loop import stack_overlaps
from cloudmatrix.catalog.stacks import DEFAULT_SCHEDULING, Scheduling, load_stack
from cloudmatrix.catalog.strict import StrictModel
from cloudmatrix.deploy import DEFAULT_ATTENTION_TP
from cloudmatrix.errors import CloudMatrixError, ConfigError
from cloudmatrix.inputs import (
    MAX_REQUESTS,
    MAX_SIM_S,
    names_file,
    path_exists,
    read_yaml_file,
)
from cloudmatrix.sim.fault_spec import FaultsSpec
from cloudmatrix.workload.spec import WorkloadSpec

SCENARIO_DIR = Path(__file__).parent / "scenarios"
DEFAULT_SCENARIO = "cm384-paper"


class _Spec(StrictModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PrefillPool(_Spec):
    instances: int = Field(ge=1, le=100_000)
    chips: int = Field(ge=1, le=100_000)
    ep: int | None = Field(default=None, ge=1)
    tokens_per_chip: int = Field(default=16384, ge=1, le=10_000_000)
    microbatch: bool | None = True
    attention_tp: int = Field(default=DEFAULT_ATTENTION_TP, ge=1)
    router: Literal["least-loaded", "cache-aware"] = "least-loaded"
    eplb: Literal["perfect", "default", "none"] = "default"
    redundant_experts: int | None = Field(default=None, ge=0)  # EPLB's extra expert slots; default per layout
    tp: int = Field(default=1, ge=1)  # dies per attention tensor-parallel group (1: data-parallel attention)
    moe_tp: int = Field(default=1, ge=1)  # expert TP: dies each expert's FFN columns are split over
    cp: int = Field(default=1, ge=1)  # context parallelism: dies that split each prompt and all-gather its KV
    reserve_gb: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # HBM per die kept back
    offload_gb: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # expert weights per die in CPU memory


class AfdPool(_Spec):
    """Attention-FFN disaggregation of each decode instance: the instance's ``chips`` (and its
    ``batch_per_chip``) are the attention pool; ``ffn_chips`` more hold the experts (cost/afd.py)."""

    ffn_chips: int = Field(ge=1, le=100_000)
    ffn_ep: int | None = Field(default=None, ge=1)
    ffn_precision: str | None = None  # the experts' weight format; default: the scenario's
    microbatches: int = Field(default=2, ge=1, le=16)


class DecodePool(_Spec):
    instances: int = Field(ge=1, le=100_000)
    chips: int = Field(ge=1, le=100_000)
    ep: int | None = Field(default=None, ge=1)
    batch_per_chip: int = Field(ge=1, le=100_000)
    mtp: int = Field(default=0, ge=0, le=4)
    mtp_acceptance: float = Field(default=0.0, ge=0, le=1)
    # standard deviation across requests of each request's draft acceptance rate (serving/mtp_spread.py)
    mtp_spread: float = Field(default=0.0, ge=0, le=0.5)
    eplb: Literal["perfect", "default", "none"] = "default"
    redundant_experts: int | None = Field(default=None, ge=0)  # EPLB's extra expert slots; default per layout
    shared_dies: int | None = Field(default=None, ge=0)  # dies holding only a shared expert; default per layout
    microbatch: bool | None = None
    kv_block_tokens: int = Field(default=128, ge=16)
    tp: int = Field(default=1, ge=1)  # dies per attention tensor-parallel group (one batch per group)
    moe_tp: int = Field(default=1, ge=1)  # expert TP: dies each expert's FFN columns are split over
    reserve_gb: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # HBM per die kept back
    offload_gb: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # expert weights per die in CPU memory
    afd: AfdPool | None = None  # attention-FFN disaggregation (decode pools only)

    @property
    def total_chips(self) -> int:
        """Chips of one instance: the attention pool's and, under AFD, the FFN pool's."""
        return self.chips + (self.afd.ffn_chips if self.afd else 0)


class AttentionDpBalance(_Spec):
    """TensorRT-LLM's ``attention_dp_config`` with ``enable_balance`` (catalog/validation.py has the row's)."""

    timeout_iters: int = Field(ge=1, le=10_000)
    batching_wait_iters: int = Field(ge=0, le=10_000)


class AggregatedPool(DecodePool):
    """Co-located instances: every step decodes the running batch and prefills up to ``chunk_tokens_per_chip``
    prompt tokens per chip (chunked prefill, as vLLM, SGLang and TensorRT-LLM run on 8-GPU nodes)."""

    afd: None = None  # a co-located step prefills on the attention dies: AFD is for decode pools

    chunk_tokens_per_chip: int = Field(
        default=2048, ge=16, le=10_000_000
    )  # default: the stack's budget over the instance
    # how a step shares the budget with the decode batch (catalog/stacks.py); default: the stack's scheduler
    scheduling: Scheduling = DEFAULT_SCHEDULING
    # decode steps between the scheduler's intakes of arrived requests (SGLang --scheduler-recv-interval; a
    # prefill step or an idle engine takes them in at once); 1: every step
    recv_interval: int = Field(default=1, ge=1, le=10_000)
    # whether the scheduler forms the next step while the device runs the current one, so a request that
    # arrives during a step waits for the step launched behind it too (catalog/stacks.py SchedulerLoop);
    # default: the stack's loop
    overlap: bool = False
    # TensorRT-LLM's attention-DP balance: new prompts held until every DP rank (die batch) has one, at most
    # ``timeout_iters`` iterations, then ``batching_wait_iters`` more while every rank decodes; None: off
    attention_dp_balance: AttentionDpBalance | None = None


class EmsCache(_Spec):
    """The EMS context cache in front of the prefill pool (P3 §4.4.2): prompts whose leading blocks (the
    workload's hash_ids) are cached load that KV over ``plane`` and compute only the rest."""

    plane: Literal["ub", "vpc"] = "ub"
    nodes: int | None = Field(default=None, ge=1)  # nodes whose DRAM the pool uses; default: the deployment's
    ssd: bool = True  # an EVS SSD tier below the DRAM tier


class Slo(_Spec):
    ttft_ms: float = Field(default=5000, gt=0)
    tpot_ms: float = Field(default=50, gt=0)


class Scenario(_Spec):
    name: str = "custom"
    system: str = "cloudmatrix384"
    model: str = "deepseek-r1"
    precision: str = "int8"  # weights (and the GEMM compute format unless activation_precision is set)
    activation_precision: str | None = None  # GEMM inputs: e.g. bf16 for W4A16 on a chip without FP4 units
    kv_precision: str = "bf16"
    stack: str | None = None  # serving stack (catalog/data/stacks.yaml); default: the system's published one
    # GEMM or fused attention kernels the deployment ran (deployment.Deployment.kernels); default: the stack's
    kernels: list[str] = []
    prefill: PrefillPool | None = None
    decode: DecodePool | None = None
    aggregated: AggregatedPool | None = None
    ems: EmsCache | None = None
    faults: FaultsSpec | None = None  # fault events or rates and the recovery policy (docs/faults.md)
    workload: WorkloadSpec = WorkloadSpec()
    slo: Slo = Slo()
    requests: int = Field(default=10000, ge=1, le=MAX_REQUESTS)
    duration_s: float | None = Field(default=None, gt=0, le=MAX_SIM_S)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    base_dir: str | None = None  # where relative trace paths resolve (the scenario file's folder)

    @model_validator(mode="before")
    @classmethod
    def _stack_defaults(cls, data: Any) -> Any:
        """Budgets the scenario leaves out take its serving stack's defaults (catalog/data/stacks.yaml):
        the KV format, and an aggregated pool's chunked-prefill budget per chip, step scheduling and scheduler
        loop."""
        if not isinstance(data, dict):
            return data
        try:
            stack = load_stack(str(data.get("stack") or default_stack(str(data.get("system", "cloudmatrix384")))))
        except CloudMatrixError:
            return data  # the field validators name the bad system or stack
        d = stack.defaults
        out = dict(data)
        if "kv_precision" not in out and d.kv_precision:
            out["kv_precision"] = d.kv_precision
        pool = out.get("aggregated")
        if isinstance(pool, dict) and "chunk_tokens_per_chip" not in pool and d.chunk_tokens is not None:
            chips = pool.get("chips")
            if isinstance(chips, int) and chips >= 1:
                pool = pool | {"chunk_tokens_per_chip": max(round(d.chunk_tokens.value / chips), 16)}
        if isinstance(pool, dict) and "scheduling" not in pool and d.scheduling is not None:
            pool = pool | {"scheduling": d.scheduling}
        if isinstance(pool, dict) and "overlap" not in pool:
            pool = pool | {"overlap": stack_overlaps(stack.id, speculative=pool.get("mtp") not in (None, 0))}
        if pool is not None:
            out["aggregated"] = pool
        return out

    @model_validator(mode="after")
    def _one_layout(self) -> Scenario:
        disaggregated = self.prefill is not None and self.decode is not None
        if disaggregated == (self.aggregated is not None):
            raise ValueError("a scenario has either prefill and decode pools, or an aggregated pool")
        if self.ems is not None and self.prefill is None:
            raise ValueError("ems: the context cache serves a prefill pool; this scenario has none")
        a = self.workload.arrivals
        if a.kind != "closed" and a.rate_per_s is not None and self.workload.trace is None:
            span = self.requests if self.duration_s is None else min(self.requests, a.rate_per_s * self.duration_s)
            if span / a.rate_per_s > MAX_SIM_S:
                raise ValueError(
                    f"{self.requests} requests at {a.rate_per_s:g}/s span {self.requests / a.rate_per_s:.3g} simulated "
                    f"s; at most {MAX_SIM_S:g} s: raise the rate or lower requests"
                )
        return self


def load_scenario(source: str | None = None, overrides: list[str] | None = None) -> Scenario:
    """A scenario from a YAML path or a built-in name (default ``cm384-paper``), with ``key=value``
    overrides."""
    name = source or DEFAULT_SCENARIO
    path = Path(name)
    looks_like_path = path.suffix in (".yaml", ".yml") or "/" in name
    exists = path_exists(path, "scenario")
    if not exists and looks_like_path:
        raise ConfigError(f"scenario {name}: file not found")
    if not exists:
        if not is_builtin(name):
            valid = ", ".join(builtin_names())
            raise ConfigError(f"scenario '{name}': no such file or built-in scenario (built-in: {valid})")
        path = SCENARIO_DIR / f"{name}.yaml"
    # a built-in scenario is a shipped file: parsed once per content, without importing PyYAML after that
    data = read_yaml(path) if not exists else read_yaml_file(path, "scenario")
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: a scenario must be a mapping of fields")
    data.setdefault("base_dir", str(path.parent.resolve()))
    return scenario_from(data, overrides, path.name)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def is_builtin(name: str) -> bool:
    """A built-in scenario file's name (a path-like or hostile name is none)."""
    return names_file(SCENARIO_DIR, f"{name}.yaml")


def scenario_from(data: dict[str, Any], overrides: list[str] | None, label: str) -> Scenario:
    """A scenario from its fields with ``key=value`` overrides applied first; errors start with ``label``."""
    for assignment in overrides or []:
        apply_assignment(data, assignment, "decode.batch_per_chip=64")
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{label}: {describe_validation_error(e)}") from None
