"""The planner: pruning before costing, rate matching in closed form, queueing, the Pareto front and the
ranking's tie order, empty results explained, the paper's decode target, checks of the best deployment
(simulated against analytic) and of large deployments (on a slice), and the planner-written scenario's
round trip through `simulate`."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudmatrix.cost.memory import memory_use
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import ConfigError
from cloudmatrix.estimate import estimate
from cloudmatrix.planner import evaluate
from cloudmatrix.planner.check import MIN_LIFETIMES, capped_run_is_steady, check, check_slice, slice_counts
from cloudmatrix.planner.evaluate import CandidateCost
from cloudmatrix.planner.inputs import PlanRequest, context, parse_workload
from cloudmatrix.planner.pareto import pareto_front
from cloudmatrix.planner.rank import Targets, _Prefill, erlang_c, instance_req_s, order_key, size_pools
from cloudmatrix.planner.scenario_out import MAX_CHECK_REQUESTS, STEADY_WINDOW_S, scenario_yaml, steady_requests
from cloudmatrix.planner.search import check_path, fast_path
from cloudmatrix.planner.space import (
    Candidate,
    SearchSpace,
    error_reason,
    feasible_candidates,
    precisions,
    prune_reason,
)
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.studies.compare import parse_workload as compare_workload

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


@pytest.fixture(scope="module")
def paper_check(paper_plan):
    """Rank 1 checked as `cloudmatrix plan` checks it: enough requests for a steady window."""
    return check(paper_plan.ranking.ranked[0], paper_plan.workload, PAPER)


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

    def reason(other_chips: int = 8, **kw):
        base = dict(phase=Phase.DECODE, precision="int8", chips=16, ep=32, microbatch=False, batch_per_chip=96)
        return prune_reason(Candidate(**{**base, **kw}), hw, model, 384, 4096, 256, other_chips)

    assert reason() is None
    assert reason(precision="bf16") == "memory"  # 671B in BF16 over 32 dies
    assert reason(chips=384, ep=768) == "chips"  # no room left for a prefill instance
    assert reason(other_chips=369) == "chips"  # ... of the size this search uses
    assert reason(batch_per_chip=95) == "divisibility"  # whole sequences per die
    assert reason(ep=24) == "divisibility"  # EP must divide the dies
    assert reason(mtp=2) == "mtp"  # one MTP layer in the config
    # a refusal the cheap checks do not foresee is counted by its kind, not lumped into one label
    redundant = Candidate(**{**dict(phase=Phase.DECODE, precision="int8", chips=16, ep=32, microbatch=False)})
    assert prune_reason(redundant, hw, model, 384, 4096, 256, 8) == "decode needs a positive --batch-per-chip"
    assert (
        error_reason("EP degree 24 must divide the 32 dies of 16 chips")
        == "EP degree N must divide the N dies of N chips"
    )


def test_pruning_uses_the_spaces_own_instance_sizes() -> None:
    hw, model = context("cloudmatrix384", "deepseek-r1", ())
    space = dataclasses.replace(SMALL, prefill_chips=(64,), precisions=("int8",))
    _, kept, pruned = feasible_candidates(hw, model, space, 90, 4096, 256)
    # 16 + 64 chips fit in 90, 32 + 64 do not (the default smallest prefill, 8 chips, would have let them by)
    assert {c.chips for c in kept if c.phase == Phase.DECODE} == {16}
    assert pruned["chips"] == sum(1 for c in feasible_candidates(hw, model, space, 384, 4096, 256)[0] if c.chips == 32)


def test_precisions_of_equal_cost_are_searched_once() -> None:
    h100, _ = context("hgx-h100", "deepseek-r1", ())
    assert precisions(h100, SearchSpace()) == ("fp8", "bf16")  # Hopper FP8 = INT8: same peak, one byte
    assert precisions(h100, SearchSpace(precisions=("fp8", "int8"))) == ("fp8",)
    cm384, _ = context("cloudmatrix384", "deepseek-r1", ())
    # the 910C runs FP8 on its BF16 units, at the BF16 peak but reading half the bytes: a distinct cost
    assert precisions(cm384, SearchSpace(precisions=("int8", "fp8", "bf16"))) == ("int8", "fp8", "bf16")


def test_ranking_is_deterministic() -> None:
    a = fast_path(PlanRequest(space=SMALL)).to_dict()
    b = fast_path(PlanRequest(space=SMALL)).to_dict()
    assert json.dumps(a) == json.dumps(b)
    scores = [d["output_tok_s_per_chip"] for d in a["ranked"]]
    assert scores == sorted(scores, reverse=True) and a["ranked"]


def test_ties_rank_lower_tpot_first_and_rank_1_is_on_the_front(paper_plan) -> None:
    ranked = paper_plan.ranking.ranked
    assert ranked == sorted(ranked, key=order_key)
    tied = [d for d in ranked if d.output_tok_s_per_chip == ranked[0].output_tok_s_per_chip]
    assert all((d.tpot_s, d.ttft_s, d.chips) >= (ranked[0].tpot_s, ranked[0].ttft_s, ranked[0].chips) for d in tied)
    assert any(d is ranked[0] for d in paper_plan.ranking.pareto)


def _cost(phase: Phase, chips: int, tok_s_per_chip: float, tpot_s: float = 0.04) -> CandidateCost:
    c = Candidate(phase=phase, precision="int8", chips=chips, ep=2 * chips, microbatch=False, tokens_per_chip=16384)
    return CandidateCost(candidate=c, feasible=True, tok_s_per_chip=tok_s_per_chip, tpot_s=tpot_s, step_s=1.0)


T = Targets(input_len=4096, output_len=256, ttft_slo_s=60, tpot_slo_s=0.05, budget_chips=384, utilisation=0.9)


def test_rate_matching_closed_form() -> None:
    # 16-chip instances: prefill 1 req/s, decode 3 req/s -> 3 prefill per decode. Per chip the pools serve
    # P = 1/16 and D = 3/16 req/s; with a share f = D / (P + D) of the chips prefilling, f·P = (1−f)·D and a
    # chip serves the harmonic P·D / (P + D).
    pre = _Prefill(cost=_cost(Phase.PREFILL, 16, 4096 / 16), req_s=1.0, transfer_s=0.0, curve=((1, 0.5), (64, 32.0)))
    sized = size_pools(pre, _cost(Phase.DECODE, 16, 3 * 255 / 16), T)  # decode emits 255 of the 256 tokens
    assert sized is not None and (sized.prefill_instances, sized.decode_instances) == (3, 1)
    p, d = 1 / 16, 3 / 16
    assert sized.output_tok_s_per_chip == pytest.approx(0.9 * p * d / (p + d) * 256)
    assert sized.rate_req_s == pytest.approx(0.9 * 3)


def test_decode_emits_output_len_minus_one_tokens() -> None:
    """The first token of an answer comes from prefill: a decode instance finishes tok/s ÷ (L − 1) answers/s."""
    dec = _cost(Phase.DECODE, 16, 255.0)
    assert instance_req_s(dec, T) == pytest.approx(16.0)
    assert instance_req_s(dec, dataclasses.replace(T, output_len=1)) == pytest.approx(255 * 16)
    assert instance_req_s(_cost(Phase.PREFILL, 16, 4096.0), T) == pytest.approx(16.0)


def _erlang_c_by_series(c: int, a: float) -> float:
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_is_stable_for_large_pools() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: the utilisation
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    for c, a in ((5, 3.2), (16, 14.0), (40, 30.5)):
        assert erlang_c(c, a) == pytest.approx(_erlang_c_by_series(c, a), rel=1e-12)
    for c, a in ((800, 720.0), (1000, 900.0), (8192, 8000.0)):  # the power series overflows here
        assert 0 < erlang_c(c, a) < 1
    assert erlang_c(1000, 900.0) < erlang_c(100, 90.0)  # a bigger pool at the same load queues less
    assert erlang_c(4, 4.0) == 1.0 and erlang_c(4, 0.0) == 0.0


def _dominates(q: tuple[float, float], p: tuple[float, float]) -> bool:
    return q[0] >= p[0] and q[1] >= p[1] and q != p


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), max_size=40))
def test_pareto_front_is_the_non_dominated_set(points) -> None:
    front = set(pareto_front(points))
    for i, p in enumerate(points):
        beaten = any(_dominates(q, p) for q in points)
        assert (i in front) <= (not beaten)
        if not beaten:  # a point nobody beats is on the front, or an equal copy of it is
            assert any(points[j] == p for j in front)


def test_no_deployment_dominates_the_front(paper_plan) -> None:
    everyone = [(d.tok_s_per_user, d.output_tok_s_per_chip) for d in paper_plan.ranking.deployments]
    for d in paper_plan.ranking.pareto:
        assert not any(_dominates(q, (d.tok_s_per_user, d.output_tok_s_per_chip)) for q in everyone)


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
    assert json.dumps({k: first[k] for k in run}) == json.dumps(run)  # the check ran exactly this scenario


def test_rank_1_serves_its_planned_throughput(paper_plan, paper_check) -> None:
    """The meaningful round trip: the simulated steady output tok/s per chip of rank 1 within 3 % of the
    analytic rate × output_len / chips."""
    c = paper_check
    assert c.analytic["output_tok_s_per_chip"] == pytest.approx(paper_plan.ranking.ranked[0].output_tok_s_per_chip)
    assert c.extra["slice"] is None and c.extra["steady"]
    assert c.simulated["output_tok_s_per_chip"] == pytest.approx(c.analytic["output_tok_s_per_chip"], rel=0.03)


def test_rank_1_tpot_within_3_pct(paper_check) -> None:
    c = paper_check
    assert c.simulated["tpot_ms"] == pytest.approx(c.analytic["tpot_ms"], rel=0.03)


def test_check_path_compares_analytic_and_simulated(paper_plan) -> None:
    request = dataclasses.replace(PAPER, top=1, check_requests=1000)
    result = check_path(dataclasses.replace(paper_plan, request=request))
    (c,) = result.checks
    assert set(c.analytic) == set(c.simulated) == {"output_tok_s_per_chip", "ttft_ms", "tpot_ms"}
    assert c.flagged == [k for k, e in c.error_pct.items() if abs(e) > 10]
    assert c.analytic["tpot_ms"] == pytest.approx(result.operating_tpot_s[0] * 1e3)  # the table's "TPOT op"


ATLAS = SearchSpace(
    prefill_chips=(8,),
    decode_chips=(16,),
    ep_divisors=(2,),
    batches_per_chip=(128,),
    tokens_per_chip=(16384,),
    attention_tp=(1,),
    mtp_depths=(0,),
    microbatch=(True,),
    precisions=("fp4",),
)


def test_slice_counts() -> None:
    assert slice_counts(12, 4, 1) == (12, 4)
    assert slice_counts(12, 4, 3) == (3, 1)  # 1/4: the smallest exact share at least 1/3 smaller
    assert slice_counts(12, 4, 2) == (6, 2)
    assert slice_counts(734, 63, 24) == (23, 2)  # coprime: the nearest proportional counts
    assert slice_counts(19, 1, 2) == (19, 1)  # one decode instance cannot be split


@pytest.mark.parametrize("span_over_e2e", [0.5, 1.9, 2.0, 3.0, 3.9])
def test_a_capped_run_is_sliced_only_when_it_would_not_be_steady(paper_plan, span_over_e2e) -> None:
    """Past the request cap, a deployment whose capped run still spans 40 s and two request lifetimes is run
    whole (a slice of coprime counts tests other proportions); a shorter capped run is sliced."""
    d, w = paper_plan.ranking.ranked[0], paper_plan.workload
    e2e_s = d.ttft_s + w.output_len * d.tpot_s
    span_s = span_over_e2e * e2e_s
    fast = dataclasses.replace(d, prefill_instances=8, decode_instances=3, rate_req_s=MAX_CHECK_REQUESTS / span_s)
    assert steady_requests(fast, w) > MAX_CHECK_REQUESTS  # past the cap in every case
    whole = span_s >= max(STEADY_WINDOW_S, MIN_LIFETIMES * e2e_s)
    assert capped_run_is_steady(fast, w) == whole
    assert (check_slice(fast, w, PAPER) is fast) == whole


def test_large_deployments_are_checked_on_a_rate_matched_slice() -> None:
    """Atlas 950 runs thousands of requests/s: a capped run of all of it spans seconds, so the check
    simulates a slice of its instances at the slice's share of the rate, long enough to be steady."""
    result = fast_path(PlanRequest(system="atlas950-superpod", space=ATLAS, top=1))
    d = result.ranking.ranked[0]
    part = check_slice(d, result.workload, result.request)
    assert d.rate_req_s > 5000 and part.chips < d.chips / 10
    assert part.prefill_instances / part.decode_instances == pytest.approx(
        d.prefill_instances / d.decode_instances, rel=0.05
    )
    assert part.output_tok_s_per_chip == pytest.approx(d.output_tok_s_per_chip, rel=0.02)
    request = dataclasses.replace(result.request, check_requests=1000)
    c = check(d, result.workload, request)
    assert c.extra["slice"]["chips"] == part.chips and "simulated 23 of 758 prefill + 2 of 65 decode" in c.extra["note"]
    # the check tests the ranked operating point: the row's figures, not the slice's own
    assert c.analytic["output_tok_s_per_chip"] == pytest.approx(d.output_tok_s_per_chip)
    assert c.analytic["ttft_ms"] == pytest.approx(d.ttft_s * 1e3)
    assert c.extra["slice"]["analytic"]["output_tok_s_per_chip"] == pytest.approx(part.rate_req_s * 256 / part.chips)
    assert c.flagged == [k for k, e in c.error_pct.items() if abs(e) > 10]
    assert part.rate_req_s * 40 <= MAX_CHECK_REQUESTS  # a steady 40 s window fits a default check


def test_empty_results_say_why() -> None:
    small = dataclasses.replace(PlanRequest(space=SMALL), top=1)
    slow = fast_path(dataclasses.replace(small, tpot_slo_ms=1))
    assert not slow.ranking.ranked and slow.why_empty.startswith("fastest decode candidate has TPOT ")
    assert slow.why_empty.endswith(" ms > 1 ms")
    late = fast_path(dataclasses.replace(small, ttft_slo_ms=1))
    assert late.why_empty.startswith("fastest prefill candidate has TTFT ")
    tiny = fast_path(dataclasses.replace(small, chips=8))
    assert tiny.why_empty == "smallest prefill+decode pair needs 16 + 16 = 32 chips > 8"
    dense = fast_path(PlanRequest(model="llama-3.1-405b", space=SearchSpace(dense_tp=(1,))))  # no TP allowed
    assert dense.stats.costed == 0
    assert "every decode candidate needs more HBM per die than the chip has: 416.3 GB > 64.0 GB" in dense.why_empty
    assert "even at the largest tensor-parallel group searched" in dense.why_empty
    assert fast_path(small).why_empty == ""


def test_refusals_are_counted_and_explained() -> None:
    def refuse(job, candidates, progress):
        return [
            CandidateCost(candidate=c, feasible=False, reason=f"deployment does not fit: {c.chips} GB")
            for c in candidates
        ]

    result = fast_path(PlanRequest(space=SMALL), cost=refuse)
    assert result.stats.infeasible == result.stats.costed > 0
    assert result.stats.infeasible_reasons == {"deployment does not fit": result.stats.costed}
    assert result.why_empty.startswith("the estimate refused every decode candidate")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(chips=0), "--chips: got 0; expected an integer >= 1"),
        (dict(tpot_slo_ms=0), r"--tpot-slo \(ms\): got 0; expected a number > 0"),
        (dict(ttft_slo_ms=-1), r"--ttft-slo \(ms\): got -1; expected a number > 0"),
        (dict(mtp_acceptance=1.5), "--mtp-acceptance: got 1.5; expected a number >= 0 and <= 1"),
        (dict(utilisation=1.0), "--load: got 1; expected"),
        (dict(top=0), "--top: got 0; expected an integer >= 1"),
    ],
)
def test_requests_are_validated(change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        fast_path(dataclasses.replace(PlanRequest(space=SMALL), **change))


def test_relative_model_path_is_resolved_once(tmp_path, monkeypatch) -> None:
    from cloudmatrix.catalog.models import MODELS_DIR

    shutil.copy(MODELS_DIR / "deepseek-r1.json", tmp_path / "config.json")
    monkeypatch.chdir(tmp_path)
    seen = []

    def spy(job, candidates, progress):
        seen.append(job.model)
        return evaluate.cost_candidates(job, candidates, progress)

    result = fast_path(PlanRequest(model="./config.json", space=SMALL, top=1), cost=spy)
    assert seen == [str(tmp_path / "config.json")] and result.request.model == seen[0]


def test_workloads() -> None:
    assert (parse_workload("4k-256").input_len, parse_workload("2048/512").output_len) == (4096, 512)
    for name in ("4k-256", "2k-256", "1k-1k", "300/7"):  # read as `compare` reads them
        w = parse_workload(name)
        assert (w.input_len, w.output_len) == compare_workload(name)
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
