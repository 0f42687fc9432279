"""The planner: pruning before costing, rate matching in closed form, the Pareto front, deterministic
ranking, the paper's decode target and the planner-written scenario's round trip through `simulate`."""

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudmatrix.cost.memory import memory_use
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import ConfigError
from cloudmatrix.estimate import estimate
from cloudmatrix.planner import evaluate
from cloudmatrix.planner.check import check
from cloudmatrix.planner.evaluate import CandidateCost
from cloudmatrix.planner.inputs import PlanRequest, context, parse_workload
from cloudmatrix.planner.pareto import dominated, pareto_front
from cloudmatrix.planner.rank import Targets, _Prefill, balanced_rate_per_chip, size_pools
from cloudmatrix.planner.scenario_out import scenario_yaml
from cloudmatrix.planner.search import check_path, fast_path
from cloudmatrix.planner.space import Candidate, SearchSpace, feasible_candidates, prune_reason
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import load_scenario

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = SearchSpace(
    prefill_chips=(16,),
    decode_chips=(16, 32),
    batches_per_chip=(32, 96, 192),
    tokens_per_chip=(16384,),
    attention_tp=(4,),
    precisions=("int8", "bf16"),
)
PAPER = PlanRequest(space=SearchSpace(precisions=("int8",)))  # deepseek-r1, cloudmatrix384, 4k-256, 50 ms


@pytest.fixture(scope="module")
def paper_plan():
    return fast_path(PAPER)


def test_search_is_large_and_pruned_before_costing(monkeypatch) -> None:
    costed: list[Deployment] = []
    real = evaluate.estimate

    def spy(hw, model, d):
        costed.append(d)
        return real(hw, model, d)

    monkeypatch.setattr(evaluate, "estimate", spy)
    result = fast_path(PlanRequest(space=SMALL, top=1))
    hw, model = context("cloudmatrix384", "deepseek-r1", ())
    assert result.stats.pruned["memory"] > 0  # BF16 at 16 chips does not fit
    assert result.stats.infeasible == 0  # everything costed was feasible
    for d in costed:  # nothing that the cheap checks reject is ever priced
        assert memory_use(plan(d, hw, model)).total_bytes <= hw.chip.hbm_bytes_per_die
    everything, kept, _ = feasible_candidates(hw, model, SearchSpace(), 384, 4096, 256)
    assert len(everything) >= 1000 and len(kept) >= 1000


def test_prune_reasons() -> None:
    hw, model = context("cloudmatrix384", "deepseek-r1", ())

    def reason(**kw):
        base = dict(phase=Phase.DECODE, precision="int8", chips=16, ep=32, microbatch=False, batch_per_chip=96)
        return prune_reason(Candidate(**{**base, **kw}), hw, model, 384, 4096, 256)

    assert reason() is None
    assert reason(precision="bf16") == "memory"  # 671B in BF16 over 32 dies
    assert reason(chips=384, ep=768) == "chips"  # no room left for a prefill instance
    assert reason(batch_per_chip=95) == "divisibility"  # whole sequences per die
    assert reason(ep=24) == "divisibility"  # EP must divide the dies
    assert reason(mtp=2) == "mtp"  # one MTP layer in the config


def test_ranking_is_deterministic() -> None:
    a = fast_path(PlanRequest(space=SMALL)).to_dict()
    b = fast_path(PlanRequest(space=SMALL)).to_dict()
    assert json.dumps(a) == json.dumps(b)
    scores = [d["output_tok_s_per_chip"] for d in a["ranked"]]
    assert scores == sorted(scores, reverse=True) and a["ranked"]


def _cost(phase: Phase, chips: int, tok_s_per_chip: float, tpot_s: float = 0.04) -> CandidateCost:
    c = Candidate(phase=phase, precision="int8", chips=chips, ep=2 * chips, microbatch=False, tokens_per_chip=16384)
    return CandidateCost(candidate=c, feasible=True, tok_s_per_chip=tok_s_per_chip, tpot_s=tpot_s, step_s=1.0)


def test_rate_matching_closed_form() -> None:
    p, d = 2.0, 6.0  # requests/s per chip of each pool
    rate = balanced_rate_per_chip(p, d)
    f = d / (p + d)  # the prefill share of the chips
    assert rate == pytest.approx(p * d / (p + d)) and f * p == pytest.approx((1 - f) * d) == pytest.approx(rate)
    # 16-chip instances: prefill 1 req/s, decode 3 req/s -> 3 prefill per decode, the harmonic rate per chip
    t = Targets(input_len=4096, output_len=256, ttft_slo_s=60, tpot_slo_s=0.05, budget_chips=384, utilisation=0.9)
    pre = _Prefill(cost=_cost(Phase.PREFILL, 16, 4096 / 16), req_s=1.0, transfer_s=0.0, curve=((1, 0.5), (64, 32.0)))
    sized = size_pools(pre, _cost(Phase.DECODE, 16, 3 * 256 / 16), t)
    assert sized is not None and (sized.prefill_instances, sized.decode_instances) == (3, 1)
    per_chip_req_s = 0.9 * balanced_rate_per_chip(1 / 16, 3 / 16)
    assert sized.output_tok_s_per_chip == pytest.approx(per_chip_req_s * 256)
    assert sized.rate_req_s == pytest.approx(0.9 * 3)


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), max_size=40))
def test_pareto_front_is_the_non_dominated_set(points) -> None:
    front = set(pareto_front(points))
    for i, p in enumerate(points):
        beaten = any(dominated(p, q) for q in points)
        assert (i in front) <= (not beaten)
        if not beaten:  # a point nobody beats is on the front, or an equal copy of it is
            assert any(points[j] == p for j in front)


def test_no_deployment_dominates_the_front(paper_plan) -> None:
    everyone = [(d.tok_s_per_user, d.output_tok_s_per_chip) for d in paper_plan.ranking.deployments]
    for d in paper_plan.ranking.pareto:
        assert not any(dominated((d.tok_s_per_user, d.output_tok_s_per_chip), q) for q in everyone)


def test_best_decode_reaches_the_paper_rate(paper_plan) -> None:
    """P3: 1,943 tok/s per NPU at TPOT < 50 ms (4K/256). The planner's best decode instance, re-estimated."""
    best = paper_plan.ranking.best_decode
    c = best.candidate
    est = estimate("cloudmatrix384", "deepseek-r1", c.deployment(4096, 256, 0.7))
    assert est.tpot_s <= 0.050
    assert est.throughput_per_chip_tok_s == pytest.approx(best.tok_s_per_chip)
    assert est.throughput_per_chip_tok_s >= 1943, f"{c.label()}: {est.throughput_per_chip_tok_s:.0f} tok/s/NPU"


def test_planner_scenario_round_trips_through_simulate(paper_plan, tmp_path) -> None:
    request = dataclasses.replace(PAPER, check_requests=1500)
    chosen = paper_plan.ranking.ranked[0]
    path = tmp_path / "planned.yaml"
    path.write_text(scenario_yaml(chosen, paper_plan.workload, request))
    first = simulate(load_scenario(str(path))).to_dict()
    assert json.dumps(first) == json.dumps(simulate(load_scenario(str(path))).to_dict())
    run = check(chosen, paper_plan.workload, request).extra["run"]
    for key in ("ttft_ms", "tpot_ms"):
        assert first[key]["mean"] == pytest.approx(run[key]["mean"], rel=0.03)
    for pool in ("prefill", "decode"):
        assert first["throughput_per_chip_tok_s"][pool] == pytest.approx(
            run["throughput_per_chip_tok_s"][pool], rel=0.03
        )


def test_check_path_compares_analytic_and_simulated(paper_plan) -> None:
    request = dataclasses.replace(PAPER, top=1, check_requests=3000)
    result = check_path(dataclasses.replace(paper_plan, request=request))
    (c,) = result.checks
    assert set(c.analytic) == set(c.simulated) == {"output_tok_s_per_chip", "ttft_ms", "tpot_ms"}
    assert c.flagged == [k for k, e in c.error_pct.items() if abs(e) > 10]
    assert abs(c.error_pct["output_tok_s_per_chip"]) <= 10  # the pools keep pace with the planned rate


def test_workloads() -> None:
    assert (parse_workload("4k-256").input_len, parse_workload("2048/512").output_len) == (4096, 512)
    trace = parse_workload(str(DATA / "mooncake_sample.jsonl"))
    assert trace.trace_rate_req_s and trace.trace_requests == 300 and trace.input_len > 0
    with pytest.raises(ConfigError, match="workload 'nope'"):
        parse_workload("nope")


def test_workload_yaml(tmp_path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("input: {kind: uniform, low: 1000, high: 3000}\noutput: {kind: fixed, value: 200}\n")
    w = parse_workload(str(path))
    assert (w.input_len, w.output_len) == (2000, 200)
    path.write_text("input: {kind: normal}\n")
    with pytest.raises(ConfigError, match="mean"):
        parse_workload(str(path))
