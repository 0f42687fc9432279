"""Step times for the simulation, from the same analytic cost model as `estimate`, cached per shape so a
long run prices each distinct (batch, context) bucket once."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.models import ModelSpec, load_model
from cloudmatrix.catalog.presets import default_stack
from cloudmatrix.catalog.stack_loop import handoff_intake_steps
from cloudmatrix.catalog.stacks import overrides_key, request_fixed_s
from cloudmatrix.cost import comm
from cloudmatrix.cost.afd_result import estimate_afd
from cloudmatrix.cost.memory import check_fits, memory_use
from cloudmatrix.deploy import Deployment, Eplb, Phase, kv_group, plan
from cloudmatrix.deployment import AfdDeployment
from cloudmatrix.errors import ConfigError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate
from cloudmatrix.sim.scenario import Scenario

KV_BUCKET_TOKENS = 64  # decode context is priced in 64-token buckets
PREFILL_BUCKET_TOKENS = 128  # prefill tokens per chip are priced in 128-token buckets
CACHED_STEPS = 64  # the cached share of a prefill batch is priced in 1/64 steps


def _step_s(system: str, model: str, deployment: Deployment) -> float:
    """A step's price, shared by every simulation in the process: validation rows of one series differ in
    their clients, not in the shapes they price. Keyed on the stack-cost overrides in force too (a hold-out
    refit prices the same shapes with other host times)."""
    return _priced_step_s(system, model, deployment, overrides_key())


@lru_cache(maxsize=1 << 15)  # bounded: a few MB of deployments
def _priced_step_s(system: str, model: str, deployment: Deployment, _overrides: tuple[Any, ...]) -> float:
    return estimate(system, model, deployment).step.step_s


@lru_cache(maxsize=1 << 12)
def _afd_step_s(system: str, model: str, afd: AfdDeployment) -> float:
    return estimate_afd(system, model, afd).step.step_s


def afd_of(scenario: Scenario) -> Callable[[Deployment], AfdDeployment] | None:
    """How the decode pool's deployment at a batch shape becomes its AFD deployment (None: no AFD)."""
    d = scenario.decode
    if d is None or d.afd is None:
        return None
    if d.ep is not None or d.moe_tp != 1:
        raise ConfigError(
            f"decode.ep: got {d.ep} (moe_tp {d.moe_tp}); under AFD the experts sit on the FFN pool: set "
            "decode.afd.ffn_ep and leave decode.ep unset"
        )
    a = d.afd

    def wrap(attention: Deployment) -> AfdDeployment:
        # a batch shape of fewer sequences than microbatches runs as one microbatch per sequence
        seqs = (attention.batch_per_chip or 0) * attention.num_chips
        mbs = max(min(a.microbatches, int(seqs)), 1)
        return AfdDeployment(
            attention=attention, ffn_chips=a.ffn_chips, ffn_ep=a.ffn_ep, ffn_precision=a.ffn_precision, microbatches=mbs
        )

    return wrap


class StepCosts:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.hw: Hardware = load_hardware(scenario.system)
        self.model: ModelSpec = load_model(scenario.model)
        self.decode_time_s = lru_cache(maxsize=None)(self._decode_time_s)
        self.prefill_time_s = lru_cache(maxsize=None)(self._prefill_time_s)
        self.kv_transfer_s = lru_cache(maxsize=1 << 16)(self._kv_transfer_s)
        self.prefill_batch_s = lru_cache(maxsize=1 << 12)(self._prefill_batch_s)  # asked once per batch
        # the serving stack: the scenario's, else the one the system's published deployment runs
        self.stack = scenario.stack or default_stack(scenario.system)
        family = self.hw.chip.family
        self.request_overhead_s = request_fixed_s(self.stack, family, disaggregated=False)
        self.handoff_overhead_s = request_fixed_s(self.stack, family, disaggregated=True) - self.request_overhead_s
        # decode steps a generation-only request waits for its first token (disaggregated pools only)
        self.intake_steps = handoff_intake_steps(self.stack) if scenario.prefill is not None else 0.0
        self.afd = afd_of(scenario)
        self.aggregated_chips = scenario.aggregated.chips if scenario.aggregated else None

    def decode_deployment(
        self, seqs_per_die: int | None = None, kv_len: int | None = None, chunk_tokens_per_chip: float | None = None
    ) -> Deployment:
        """The decode pool's deployment (or the aggregated pool's, with a prompt chunk) at a batch shape."""
        d = self.s.aggregated or self.s.decode
        assert d is not None
        # the simulation's decode ranks are TP groups: a group's sequences are its dies' batch together
        batch = d.batch_per_chip if seqs_per_die is None else seqs_per_die * self.hw.chip.num_dies / d.tp
        aggregated = self.s.aggregated is not None
        if aggregated and chunk_tokens_per_chip is None:
            chunk_tokens_per_chip = self.s.aggregated.chunk_tokens_per_chip  # type: ignore[union-attr]
        return Deployment(
            phase=Phase.AGGREGATED if aggregated else Phase.DECODE,
            chunk_tokens_per_chip=chunk_tokens_per_chip,
            num_chips=d.chips,
            ep=d.ep,
            batch_per_chip=batch,
            input_len=self.s.workload.input.typical,
            output_len=self.s.workload.output.typical,
            kv_len=kv_len,
            precision=self.s.precision,
            activation_precision=self.s.activation_precision,
            kv_precision=self.s.kv_precision,
            mtp=d.mtp,
            mtp_acceptance=d.mtp_acceptance,
            eplb=Eplb(d.eplb),
            redundant_experts=d.redundant_experts,
            shared_dies=d.shared_dies,
            microbatch=d.microbatch,
            tp=d.tp,
            moe_tp=d.moe_tp,
            reserve_gb=d.reserve_gb,
            offload_gb=d.offload_gb,
            stack=self.stack,
            kernels=tuple(self.s.kernels),
        )

    def prefill_deployment(
        self, tokens_per_chip: int = 0, input_len: int | None = None, cached_fraction: float = 0.0
    ) -> Deployment:
        p = self.s.prefill
        assert p is not None
        return Deployment(
            cached_fraction=cached_fraction,
            cache_plane=self.s.ems.plane if self.s.ems else "ub",
            phase=Phase.PREFILL,
            num_chips=p.chips,
            ep=p.ep,
            tokens_per_chip=tokens_per_chip or p.tokens_per_chip,
            input_len=input_len or self.s.workload.input.typical,
            precision=self.s.precision,
            activation_precision=self.s.activation_precision,
            kv_precision=self.s.kv_precision,
            microbatch=p.microbatch,
            attention_tp=p.attention_tp,
            eplb=Eplb(p.eplb),
            redundant_experts=p.redundant_experts,
            tp=p.tp,
            moe_tp=p.moe_tp,
            cp=p.cp,
            reserve_gb=p.reserve_gb,
            offload_gb=p.offload_gb,
            stack=self.stack,
            kernels=tuple(self.s.kernels),
        )

    def check(self) -> None:
        """The pools must fit the system and be feasible at their configured sizes (raises with the numbers)."""
        pools = [
            (name, pool)
            for name, pool in (
                ("prefill", self.s.prefill),
                ("decode", self.s.decode),
                ("aggregated", self.s.aggregated),
            )
            if pool is not None
        ]
        need = sum(pool.instances * getattr(pool, "total_chips", pool.chips) for _, pool in pools)
        if need > self.hw.system.num_chips:
            parts = " + ".join(
                f"{pool.instances} x {getattr(pool, 'total_chips', pool.chips)} {name}" for name, pool in pools
            )
            raise InfeasibleDeploymentError(
                f"deployment needs {need} chips ({parts}) but {self.hw.system.id} has {self.hw.system.num_chips}"
            )
        if self.s.prefill is not None:
            _pool_fits("prefill", self.s.prefill, lambda: estimate(self.hw, self.model, self.prefill_deployment()))
        name, pool = pools[-1]  # the decode or the aggregated pool
        if self.afd is not None:
            afd = self.afd
            _pool_fits(name, pool, lambda: estimate_afd(self.hw, self.model, afd(self.decode_deployment())))
            return
        _pool_fits(name, pool, lambda: estimate(self.hw, self.model, self.decode_deployment()))

    def kv_capacity_blocks(self, block_tokens: int) -> int:
        """KV blocks a decode die holds: HBM left after weights, buffers and reserve at the configured batch."""
        if self.afd is not None:  # the attention pool holds the sequences
            est = estimate_afd(self.hw, self.model, self.afd(self.decode_deployment()))
            p, mem = est.plans.attention, est.attention_memory
        else:
            p = plan(self.decode_deployment(), self.hw, self.model)
            mem = memory_use(p)
            check_fits(p, mem)
        free = mem.capacity_bytes - mem.weights_bytes - mem.buffers_bytes - mem.reserve_bytes
        per_block = self.model.kv_bytes(block_tokens, p.kv_bytes) / p.kv_shards
        return int(free // per_block)

    def _decode_time_s(self, seqs_per_die: int, kv_bucket: int, chunk_bucket: int = 0) -> float:
        kv = max(kv_bucket * KV_BUCKET_TOKENS, 1)
        chunk = chunk_bucket * PREFILL_BUCKET_TOKENS if self.s.aggregated else None
        if self.afd is not None:
            return _afd_step_s(self.s.system, self.s.model, self.afd(self.decode_deployment(seqs_per_die, kv)))
        return _step_s(self.s.system, self.s.model, self.decode_deployment(seqs_per_die, kv, chunk))

    def decode_step_s(self, seqs_per_die: int, mean_kv: float, chunk_tokens: float = 0.0) -> float:
        """A decode step (or an aggregated step carrying ``chunk_tokens`` prompt tokens in all)."""
        if self.aggregated_chips is None:  # disaggregated decode: no prompt chunk (asked once per step)
            return self.decode_time_s(seqs_per_die, max(round(mean_kv / KV_BUCKET_TOKENS), 1), 0)
        per_chip = chunk_tokens / self.aggregated_chips
        return self.decode_time_s(
            seqs_per_die, max(round(mean_kv / KV_BUCKET_TOKENS), 1), math.ceil(per_chip / PREFILL_BUCKET_TOKENS)
        )

    def decode_steps_s(self, seqs_per_die: int, mean_kv: np.ndarray) -> np.ndarray:
        """``decode_step_s`` over a stretch of steps of one batch shape without a prompt chunk, one price per
        KV bucket (``np.rint`` rounds half to even, as ``round`` does)."""
        buckets = np.maximum(np.rint(mean_kv / KV_BUCKET_TOKENS), 1).astype(np.int64)
        levels, where = np.unique(buckets, return_inverse=True)
        prices = np.array([self.decode_time_s(seqs_per_die, int(b), 0) for b in levels.tolist()])
        return prices[where]

    def intake_s(self, seqs_per_die: int, mean_kv: float) -> float:
        """What a decode engine adds between a request's KV landing and its first token, at its batch shape
        (stacks.yaml ``handoff_steps``): ``intake_steps`` of its steps; an idle engine (no sequence) has no
        step to wait for and polls the pull at once, so only the first generation step, of one sequence."""
        if seqs_per_die == 0:
            return self.decode_step_s(1, self.s.workload.input.typical)
        return self.intake_steps * self.decode_step_s(seqs_per_die, mean_kv)

    def _prefill_time_s(self, tokens_bucket: int, input_len_bucket: int, cached_bucket: int = 0) -> float:
        dep = self.prefill_deployment(
            tokens_bucket * PREFILL_BUCKET_TOKENS, input_len_bucket * KV_BUCKET_TOKENS, cached_bucket / CACHED_STEPS
        )
        return _step_s(self.s.system, self.s.model, dep)

    def _prefill_batch_s(self, total_tokens: int, mean_input: float, cached_tokens: int = 0) -> float:
        """A prefill batch of ``total_tokens`` prompt tokens, ``cached_tokens`` of them loaded from EMS."""
        assert self.s.prefill is not None
        per_chip = total_tokens / self.s.prefill.chips
        cached = min(round(cached_tokens / max(total_tokens, 1) * CACHED_STEPS), CACHED_STEPS - 1)
        return self.prefill_time_s(
            max(math.ceil(per_chip / PREFILL_BUCKET_TOKENS), 1), max(round(mean_input / KV_BUCKET_TOKENS), 1), cached
        )

    def _kv_transfer_s(self, input_len: int) -> float:
        """The prompt's KV cache over RDMA, striped over the NICs of the attention TP group (P3 §4.3.3)."""
        assert self.s.prefill is not None
        p = self.s.prefill
        stripe = kv_group(p.tp, p.attention_tp, p.cp)
        return comm.kv_handoff_s(self.hw, self.model, input_len, self.s.kv_precision, stripe) + self.handoff_overhead_s


def _pool_fits(name: str, pool: Any, priced: Callable[[], object]) -> None:
    """Price a pool's instance; a refusal names the pool that does not fit, then the estimate's reason."""
    try:
        priced()
    except InfeasibleDeploymentError as e:
        ep = f" EP{pool.ep}" if pool.ep else ""
        raise InfeasibleDeploymentError(f"{name} pool ({pool.instances} x {pool.chips} chips{ep}): {e}") from None
