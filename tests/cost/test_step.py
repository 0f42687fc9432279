import dataclasses
import math

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.cost.step import best_step_cost, step_cost
from cloudmatrix.deploy import Deployment, Phase, expert_layout, mtp_tokens_per_step, plan
from cloudmatrix.errors import CloudMatrixError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate

HW = load_hardware("cloudmatrix384")
R1 = load_model("deepseek-r1")


def test_paper_expert_layouts() -> None:
    decode = expert_layout(R1, 320, None, 32)  # 256 routed + 32 redundant + 32 shared copies (P3 §4.1)
    assert (decode.routed_dies, decode.redundant, decode.shared_dies, decode.routed_slots_per_die) == (288, 32, 32, 1)
    prefill = expert_layout(R1, 32, None)  # 8 routed + 1 redundant per rank, shared local
    assert (prefill.routed_slots_per_die, prefill.redundant, prefill.shared_dies) == (9, 32, 0)
    h800 = expert_layout(R1, 144, None)  # DeepSeek decode EP144: 2 routed per GPU, 32 redundant
    assert (h800.routed_slots_per_die, h800.redundant) == (2, 32)


def test_mtp_tokens() -> None:
    assert mtp_tokens_per_step(1, 0.7) == pytest.approx(1.7)
    assert mtp_tokens_per_step(2, 0.5) == pytest.approx(1.75)
    assert mtp_tokens_per_step(0, 0.9) == 1.0


@pytest.mark.parametrize("microbatch", [True, False])
@pytest.mark.parametrize("fixture", ["paper_decode", "paper_prefill"])
def test_breakdown_sums_to_step(request, fixture, microbatch) -> None:
    dep = dataclasses.replace(request.getfixturevalue(fixture), microbatch=microbatch)
    cost = step_cost(plan(dep, HW, R1), microbatch)
    assert sum(cost.breakdown_us.values()) == pytest.approx(cost.step_s * 1e6, rel=1e-9)
    assert sum(cost.layer_breakdown_us.values()) == pytest.approx(cost.layer_us["moe"], rel=1e-9)
    assert sum(cost.roofline_us.values()) < cost.step_s * 1e6  # the roofline is a lower bound


def test_auto_microbatch_takes_the_faster(paper_decode) -> None:
    p = plan(dataclasses.replace(paper_decode, microbatch=None), HW, R1)
    best = best_step_cost(p)
    assert best.step_s == min(step_cost(p, True).step_s, step_cost(p, False).step_s)


@pytest.mark.parametrize("mtp", [0, 1, 3])
@pytest.mark.parametrize("batch", [1, 8, 24, 32, 48, 96, 128])
def test_auto_microbatch_stop_never_changes_the_choice(paper_decode, batch, mtp) -> None:
    """The microbatched graph stops early (its layers, the step's fixed ops and the MTP drafts already slower):
    the step is still the faster of the two graphs priced in full, field for field."""
    dep = dataclasses.replace(paper_decode, microbatch=None, batch_per_chip=batch, mtp=mtp)
    p = plan(dep, HW, R1)
    serial, overlapped = step_cost(p, False), step_cost(p, True)
    assert best_step_cost(p) == (overlapped if overlapped.step_s <= serial.step_s else serial)


def test_step_grows_with_batch_and_context(paper_decode) -> None:
    def step(**kw: float) -> float:
        return estimate("cloudmatrix384", "deepseek-r1", dataclasses.replace(paper_decode, **kw)).step.step_s

    assert step(batch_per_chip=8) < step(batch_per_chip=24) < step(batch_per_chip=96)
    assert step(kv_len=1024) < step(kv_len=4096)


def test_tpot_identity(paper_decode) -> None:
    e = estimate("cloudmatrix384", "deepseek-r1", paper_decode)
    assert e.tpot_s == pytest.approx(e.step.step_s / 1.7)
    assert e.throughput_per_chip_tok_s == pytest.approx(96 / e.tpot_s)


def test_memory_never_over_capacity_and_buffers_match_paper(paper_decode) -> None:
    mem = memory_use(plan(paper_decode, HW, R1))
    assert mem.total_bytes <= mem.capacity_bytes
    # dispatch + combine buffers: 320 ranks x 96 tokens x (7.5 KB + 14 KB) ~= 645 MB (P3 §4.2.1)
    assert mem.buffers_bytes == pytest.approx(320 * 96 * (7168 + 512 + 14336))
    assert mem.buffers_bytes / 2**20 == pytest.approx(645, rel=0.01)


def test_infeasible_memory_states_numbers(paper_decode) -> None:
    with pytest.raises(InfeasibleDeploymentError, match=r"weights .* \+ KV .* GB > 64.0 GB HBM per die"):
        estimate("cloudmatrix384", "deepseek-r1", dataclasses.replace(paper_decode, batch_per_chip=400))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ep": 7}, "EP degree 7 must divide"),
        ({"num_chips": 1000}, "chips 1000 must be between 1 and the 384"),
        ({"precision": "int3"}, "precision 'int3' is not one of"),
        ({"mtp_acceptance": 1.5}, r"mtp_acceptance \(--mtp-acceptance\): got 1.5"),
        ({"batch_per_chip": 0}, "positive --batch-per-chip"),
    ],
)
def test_bad_deployments(paper_decode, change, message) -> None:
    with pytest.raises(CloudMatrixError, match=message):  # bad numbers at construction, the rest in plan
        estimate("cloudmatrix384", "deepseek-r1", dataclasses.replace(paper_decode, **change))


def test_dense_and_gqa_models_estimate() -> None:
    dep = Deployment(phase=Phase.DECODE, num_chips=16, batch_per_chip=8, input_len=2048, output_len=256, ep=1)
    # attention and dense FFN are data-parallel (replicated per die): a 405B dense model cannot fit a die
    with pytest.raises(InfeasibleDeploymentError, match=r"weights 4\d\d\.\d"):
        estimate("cloudmatrix384", "llama-3.1-405b", dep)
    q = estimate("cloudmatrix384", "qwen3-235b-a22b", dataclasses.replace(dep, ep=None))
    assert "experts" in q.step.breakdown_us and "attention_core" in q.step.breakdown_us
    with pytest.raises(InfeasibleDeploymentError, match="no MTP layers"):
        estimate("cloudmatrix384", "kimi-k2", dataclasses.replace(dep, ep=None, num_chips=160, mtp=1))


def test_aggregated_step_shares_weight_reads(paper_decode) -> None:
    """A co-located step decodes the batch and prefills a chunk: slower than decode alone, faster than a
    decode step plus a separate pass over the chunk, since weights are read once."""
    agg = dataclasses.replace(
        paper_decode, phase=Phase.AGGREGATED, num_chips=16, ep=32, shared_dies=None, batch_per_chip=32
    )
    e = estimate("cloudmatrix384", "deepseek-r1", agg)
    dec = estimate("cloudmatrix384", "deepseek-r1", dataclasses.replace(agg, phase=Phase.DECODE))
    chunk = 32 * 1.7 * 4096 / 256  # balanced: prompt tokens per step keep pace with finishing sequences
    assert e.plan.chunk_tokens_per_die * 2 == pytest.approx(chunk)
    assert e.prefill_tokens_per_chip_s == pytest.approx(chunk / e.step.step_s)
    assert dec.step.step_s < e.step.step_s
    assert "chunk_attention" in e.step.breakdown_us and "chunk_attention" not in dec.step.breakdown_us
    assert sum(e.step.breakdown_us.values()) == pytest.approx(e.step.step_s * 1e6, rel=1e-9)
    # a prompt waits half the running step (no stack: a loop that takes requests in between steps), then prefills
    assert e.ttft_s == pytest.approx((0.5 + math.ceil(4096 / e.plan.chunk_tokens_per_die)) * e.step.step_s)
