"""`compare` and `plan` agree, or say why: the same instances give the same figures in both (one estimate,
one pool-sizing function), and the plan names how its rank 1 stands against the preset `compare` prices."""

import dataclasses

import pytest

from cloudmatrix.catalog.presets import presets
from cloudmatrix.deploy import Phase
from cloudmatrix.estimate import matched_output_tok_s_per_chip, pool_req_s
from cloudmatrix.planner.evaluate import Job, cost_one
from cloudmatrix.planner.inputs import PlanRequest
from cloudmatrix.planner.rank import PlannedDeployment, Targets, instance_req_s
from cloudmatrix.planner.search import fast_path
from cloudmatrix.planner.space import Candidate, SearchSpace
from cloudmatrix.planner.versus import on_compare_terms, versus_preset
from cloudmatrix.studies.compare import Conditions, compare_system

COND = Conditions(model="deepseek-r1", input_len=2048, output_len=2048, tpot_slo_ms=50)


def _space(precisions: tuple[str, ...], batches: tuple[int, ...]) -> SearchSpace:
    return SearchSpace(
        prefill_chips=(16,),
        decode_chips=(48,),
        batches_per_chip=batches,
        tokens_per_chip=(16384,),
        attention_tp=(4,),
        precisions=precisions,
        mtp_depths=(1,),
        microbatch=(True,),
        ep_divisors=(1,),
    )


@pytest.mark.parametrize("system", ["gb200-nvl72", "cloudmatrix384", "hgx-h100"])
def test_the_same_instances_give_the_same_figures(system: str) -> None:
    """The preset's instances costed by the planner give compare's per-chip prefill and decode rates, and
    the one pool-sizing function turns either into compare's output tok/s per chip."""
    r = compare_system(system, COND)
    assert r.feasible and r.mode == "disaggregated"
    p, d = presets()[system]["prefill"], presets()[system]["decode"]
    job = Job(
        system=system,
        model="deepseek-r1",
        overrides=(),
        input_len=2048,
        output_len=2048,
        mtp_acceptance=0.7,
        stack=presets()[system]["stack"],
    )
    prec = presets()[system]["precision"]
    pre = cost_one(
        job,
        Candidate(
            phase=Phase.PREFILL,
            precision=prec,
            chips=p["chips"],
            ep=p["ep"],
            microbatch=p["microbatch"],
            tokens_per_chip=p["tokens_per_chip"],
        ),
        {},
    )
    dec_c = Candidate(
        phase=Phase.DECODE,
        precision=prec,
        chips=d["chips"],
        ep=d["ep"],
        microbatch=True,
        batch_per_chip=int(r.batch_per_chip),
        mtp=1,
        shared_dies=d.get("shared_dies"),  # the preset's published layout (the paper's EP320: 32)
    )
    costs = [cost_one(job, dataclasses.replace(dec_c, microbatch=mb), {}) for mb in (True, False)]
    dec = max(costs, key=lambda c: c.tok_s_per_chip)  # compare lets the estimate pick the faster pipeline
    assert pre.tok_s_per_chip == pytest.approx(r.prefill_tok_s_per_chip, rel=1e-12)
    assert dec.tok_s_per_chip == pytest.approx(r.decode_tok_s_per_chip, rel=1e-12)
    assert dec.tpot_s * 1e3 == pytest.approx(r.tpot_ms, rel=1e-12)
    planned = PlannedDeployment(
        prefill=pre,
        decode=dec,
        prefill_instances=1,
        decode_instances=1,
        rate_req_s=1.0,
        ttft_s=0.0,
        output_tok_s_per_chip=0.0,
        meets_slo=True,
    )
    assert on_compare_terms(planned, 2048, 2048) == pytest.approx(r.output_tok_s_per_chip, rel=1e-12)
    t = Targets(input_len=2048, output_len=2048, ttft_slo_s=5, tpot_slo_s=0.05, budget_chips=72, utilisation=0.9)
    assert instance_req_s(dec, t) == pool_req_s(dec.tok_s_per_chip * d["chips"], 2048, "decode")
    assert instance_req_s(pre, t) == pool_req_s(pre.tok_s_per_chip * p["chips"], 2048, "prefill")


def test_pool_sizing_closed_forms() -> None:
    assert pool_req_s(2047.0, 2048, "decode") == 1.0  # the first token is prefill's
    assert pool_req_s(2048.0, 2048, "prefill") == 1.0
    assert pool_req_s(2048.0, 2048, "aggregated") == 1.0
    assert pool_req_s(5.0, 1, "decode") == 5.0  # a one-token answer: decode still steps once
    # 2 req/s per prefill chip, 6 per decode chip: 3/4 of the chips prefill, 1.5 req/s per chip
    assert matched_output_tok_s_per_chip(2.0, 6.0, 100) == pytest.approx(150.0)


def test_plan_names_a_search_cap_that_keeps_it_below_the_preset() -> None:
    result = fast_path(PlanRequest(system="gb200-nvl72", workload="2k-2k", space=_space(("fp8",), (96, 192)), top=1))
    v = versus_preset(result)
    assert v is not None and v["compare_output_tok_s_per_chip"] == pytest.approx(
        compare_system("gb200-nvl72", dataclasses.replace(COND, ttft_slo_ms=5000)).output_tok_s_per_chip
    )
    assert v["plan_output_tok_s_per_chip_compare_terms"] < v["compare_output_tok_s_per_chip"]
    assert "\n" not in v["line"] and v["line"].endswith("the search's decode batch stops at 192 per chip")


def test_plan_says_why_rank_1_is_not_the_preset_it_could_have_found() -> None:
    """With the preset's own batch in the space, rank 1 still runs the smaller batch: in whole instances on
    72 chips the prefill pool binds, so both batches plan the same rate and the lower TPOT ranks first."""
    r = compare_system("gb200-nvl72", dataclasses.replace(COND, ttft_slo_ms=5000))
    space = _space(("fp8",), (192, int(r.batch_per_chip)))
    result = fast_path(PlanRequest(system="gb200-nvl72", workload="2k-2k", space=space, top=1))
    v = versus_preset(result)
    assert v is not None and "prefill binds" in v["line"]
    first = result.listed[0]
    at_preset = next(d for d in result.ranking.ranked if d.decode.candidate.batch_per_chip == r.batch_per_chip)
    assert first.decode.candidate.batch_per_chip == 192
    assert first.output_tok_s_per_chip == pytest.approx(at_preset.output_tok_s_per_chip)
    assert on_compare_terms(at_preset, 2048, 2048) == pytest.approx(r.output_tok_s_per_chip, rel=1e-9)


def test_no_line_without_a_preset_or_under_overrides() -> None:
    over = PlanRequest(
        system="gb200-nvl72",
        workload="2k-2k",
        space=_space(("fp8",), (192,)),
        top=1,
        hardware_overrides=("system.planes.scale_up.bw_gb_s_per_die=x2",),
    )
    assert versus_preset(fast_path(over)) is None


def test_the_reports_plan_section_carries_the_line() -> None:
    from cloudmatrix.report.html import _plan

    result = fast_path(PlanRequest(system="gb200-nvl72", workload="2k-2k", space=_space(("fp8",), (96, 192)), top=1))
    d = result.to_dict() | {"versus_compare": versus_preset(result)}
    page = _plan(d)
    assert "vs compare: preset Wide EP inside one NVL72" in page and "stops at 192 per chip" in page
