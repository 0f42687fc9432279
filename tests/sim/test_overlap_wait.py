"""The wait before a co-located prefill, run by the simulation's co-located instance and priced in closed form
(``catalog.stack_loop.prompt_wait_steps``): a request that reaches a busy engine waits for the rest of the
running step, and under an overlapping scheduler (SGLang, TensorRT-LLM) for the step launched behind it too.
The estimate's TTFT holds the same wait, taken from the stack's scheduler loop."""

from functools import partial
from typing import Any

import numpy as np
import pytest
import simpy

from cloudmatrix.catalog.stack_loop import prompt_wait_steps
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate
from cloudmatrix.serving.decode import DecodeBatch
from cloudmatrix.serving.kv_pool import KvBlockPools
from cloudmatrix.serving.requests import RequestTable
from cloudmatrix.sim.aggregated import AggregatedInstance
from cloudmatrix.sim.events import call_at
from cloudmatrix.sim.scenario import Scenario

STEP_S = 0.01  # every step of the stub costs the same, so the step boundaries fall on a grid


class _Costs:
    def decode_step_s(self, seqs: int, mean_kv: float, chunk: int) -> float:
        return STEP_S


class _Recorder:
    def decode_step(self, *args: Any) -> None: ...

    def prefill_batch(self, *args: Any) -> None: ...


class _Sim:
    """What a co-located instance uses of its simulation, with steps of one fixed length."""

    def __init__(self, table: RequestTable) -> None:
        self.env, self.table = simpy.Environment(), table
        self.costs, self.rec = _Costs(), _Recorder()
        self.mtp_rng: Any = None
        self.observer = None
        self.faults = None

    def _finish(self, rids: np.ndarray) -> None: ...

    def _stretch(self, batch: DecodeBatch, first_s: float) -> None:
        return None  # step by step

    def decode_left(self, rid: int) -> int:
        return int(self.table.output_len[rid]) - 1  # every request at the common acceptance


def _waits(overlap: bool, phases: np.ndarray) -> np.ndarray:
    """Steps each request waited from its arrival to the start of its prefill, one arriving at each phase of
    a step (a fraction of it) while a long request keeps the engine busy."""
    n = len(phases) + 1
    output = np.full(n, 4, dtype=np.int64)
    output[0] = 10_000  # the request that keeps the engine busy
    table = RequestTable(np.full(n, 16, dtype=np.int64), output)
    sim = _Sim(table)
    batch = DecodeBatch(1, n, KvBlockPools(1, 100_000, 16), 0, 0.0)
    inst = AggregatedInstance(sim, 0, batch, 4096, "prefill-first", 1, overlap)  # type: ignore[arg-type]

    def arrive(rid: int, _event: object) -> None:
        table.arrive(rid, sim.env.now)
        inst.enqueue(rid)

    inst.loop.start()  # finds nothing and sleeps, as at a run's start
    call_at(sim.env, 0.0, partial(arrive, 0))
    for k, phase in enumerate(phases, start=1):  # ten steps apart: each meets a decode-only engine
        call_at(sim.env, (10 * k + phase) * STEP_S, partial(arrive, k))
    sim.env.run(until=(10 * n + 10) * STEP_S)
    return (table.prefill_start_s[1:] - table.arrival_s[1:]) / STEP_S


@pytest.mark.parametrize("overlap", [False, True])
def test_the_simulated_wait_is_the_closed_form_over_arrival_phases(overlap: bool) -> None:
    phases = (np.arange(20) + 0.5) / 20  # evenly over a step
    waits = _waits(overlap, phases)
    assert waits == pytest.approx(1 - phases + (1 if overlap else 0), abs=1e-9)  # each arrival, exactly
    assert waits.mean() == pytest.approx(prompt_wait_steps(overlap), abs=1e-9)  # 0.5 and 1.5 steps
    assert prompt_wait_steps(overlap, recv_interval=10) == pytest.approx(prompt_wait_steps(overlap) + 4.5)


def _aggregated(stack: str) -> Deployment:
    return Deployment(
        phase=Phase.AGGREGATED,
        num_chips=8,
        tp=8,
        batch_per_chip=1.0,
        kv_len=1536,
        input_len=1024,
        output_len=1024,
        chunk_tokens_per_chip=2048,
        precision="fp8",
        stack=stack,
    )


def test_the_estimate_waits_what_the_stack_loop_says() -> None:
    """SGLang's overlapping loop waits 1.5 steps, a stack with no loop stated (DeepSeek's engine) 0.5, at the
    same step time."""
    overlapping = estimate("hgx-h200", "deepseek-r1", _aggregated("sglang"))
    synchronous = estimate("hgx-h200", "deepseek-r1", _aggregated("deepseek"))
    for est, wait in ((overlapping, 1.5), (synchronous, 0.5)):
        assert est.ttft_s == pytest.approx((wait + 1) * est.step.step_s, rel=1e-12)


@pytest.mark.parametrize(
    ("stack", "overlap"), [("sglang", True), ("trtllm", True), ("vllm", True), ("deepseek", False)]
)
def test_a_scenario_runs_its_stacks_loop_and_a_pool_may_turn_it_off(stack: str, overlap: bool) -> None:
    pool = {"instances": 1, "chips": 8, "tp": 8, "batch_per_chip": 1}
    base = {"system": "hgx-b200", "model": "deepseek-r1", "precision": "fp8", "stack": stack}
    assert Scenario.model_validate(base | {"aggregated": pool}).aggregated.overlap is overlap  # type: ignore[union-attr]
    off = Scenario.model_validate(base | {"aggregated": pool | {"overlap": False}})
    assert off.aggregated.overlap is False  # type: ignore[union-attr]
    spec = Scenario.model_validate(base | {"aggregated": pool | {"mtp": 1, "mtp_acceptance": 0.7}})
    # SGLang 0.5.6: off with EAGLE; vLLM's async scheduling runs with its EAGLE/MTP drafts
    assert spec.aggregated.overlap is (stack in ("trtllm", "vllm"))  # type: ignore[union-attr]
