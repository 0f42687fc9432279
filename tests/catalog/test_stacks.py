"""Serving-stack profiles: loading, the Dynamo front ends over their engines, and what each constant adds:
the step overhead to every engine step, the request overhead to every TTFT."""

import dataclasses

import pytest

from cloudmatrix.catalog.stacks import CostsLike, load_stack, stack_costs, stack_ids
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.errors import UnknownIdError
from cloudmatrix.estimate import estimate
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.studies.stack_fit import fit_stack_costs


def test_stacks_without_fit_rows_say_their_costs_are_assumed() -> None:
    # stacks without fitted rows (AMD, Ascend) say their costs are assumed: their own, or another stack's fit
    for sid in set(stack_ids()) - {"cloudmatrix-infer", "deepseek", "sglang", "vllm", "trtllm"}:
        for costs in load_stack(sid).families.values():
            if isinstance(costs, CostsLike):
                assert costs.source.startswith("assumed"), sid
            else:
                assert costs.step_overhead_us.assumed and costs.request_overhead_ms.assumed, sid
    assert stack_costs("atom", "cdna") == stack_costs("vllm", "hopper")
    # a like family takes the named fit's host times; its own kernels (sglang-ascend's attention) come beside
    own, named = stack_costs("sglang-ascend", "ascend"), stack_costs("sglang", "hopper")
    assert own is not None and named is not None
    assert own.model_copy(update={"kernels": named.kernels, "kernels_source": named.kernels_source}) == named


def test_dynamo_runs_its_engines_costs() -> None:
    assert load_stack("dynamo-trtllm").base == "trtllm"
    assert stack_costs("dynamo-trtllm", "blackwell") == stack_costs("trtllm", "blackwell")
    assert stack_costs("dynamo-sglang", "hopper") == stack_costs("sglang", "hopper")


def test_family_falls_back_to_default() -> None:
    assert stack_costs("vllm", "ascend") == load_stack("vllm").families["default"]
    assert stack_costs(None, "hopper") is None


def test_unknown_stack_is_named() -> None:
    with pytest.raises(UnknownIdError, match="unknown serving stack 'tgi'; expected one of: atom, cloudmatrix-infer"):
        load_stack("tgi")


def test_step_overhead_adds_to_every_step() -> None:
    base = Deployment(
        phase=Phase.DECODE,
        num_chips=8,
        batch_per_chip=8,
        input_len=1024,
        output_len=1024,
        precision="fp4",
        kv_precision="fp8",
        microbatch=False,
    )
    device = estimate("hgx-b200", "gpt-oss-120b", base)
    vllm = estimate("hgx-b200", "gpt-oss-120b", dataclasses.replace(base, stack="vllm"))
    extra = stack_costs("vllm", "blackwell").step_overhead_us.value  # type: ignore[union-attr]
    assert extra > 0
    assert (vllm.step.step_s - device.step.step_s) * 1e6 == pytest.approx(extra)
    assert vllm.step.breakdown_us["stack_step_overhead"] == pytest.approx(extra)


def _one_request(stack: str) -> float:
    sc = Scenario.model_validate(
        dict(
            system="hgx-b200",
            model="gpt-oss-120b",
            precision="fp4",
            kv_precision="fp8",
            stack=stack,
            aggregated=dict(instances=1, chips=1, batch_per_chip=1, chunk_tokens_per_chip=4096),
            workload=dict(
                input=dict(kind="fixed", value=1024),
                output=dict(kind="fixed", value=8),
                arrivals=dict(kind="closed", concurrency=1),
            ),
            requests=1,
        )
    )
    return simulate(sc).to_dict()["ttft_ms"]["p50"]


def test_request_overhead_adds_to_ttft() -> None:
    """One request on an idle engine: TTFT grows by the request overhead plus one step's host time."""
    sglang, vllm = stack_costs("sglang", "blackwell"), stack_costs("vllm", "blackwell")
    assert sglang is not None and vllm is not None and sglang.step_overhead_us.value != vllm.step_overhead_us.value
    gap = _one_request("sglang") - _one_request("vllm")  # neither names Blackwell kernels: the same device time
    expected = (sglang.request_overhead_ms.value - vllm.request_overhead_ms.value) + (
        sglang.step_overhead_us.value - vllm.step_overhead_us.value
    ) / 1e3
    assert gap == pytest.approx(expected, abs=1e-6)


def test_catalog_holds_the_fit() -> None:
    for name, row in fit_stack_costs().items():
        assert row["fitted"] == pytest.approx(row["catalog"], rel=0.01, abs=1e-3), name


def test_compare_and_plan_take_a_stack() -> None:
    import json

    from typer.testing import CliRunner

    from cloudmatrix.cli.app import app

    runner = CliRunner()
    args = ["compare", "--systems", "hgx-h100", "--workload", "1k-1k", "--json"]
    default = json.loads(runner.invoke(app, args).stdout)["systems"][0]
    vllm = json.loads(runner.invoke(app, [*args, "--stack", "vllm"]).stdout)["systems"][0]
    assert (default["stack"], vllm["stack"]) == ("sglang", "vllm")
    assert default["ttft_ms"] != vllm["ttft_ms"]  # a different front-end time per request
    for command in (["compare", "--stack", "tgi"], ["plan", "--stack", "tgi", "--no-check"]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2 and "unknown serving stack 'tgi'" in res.output


def test_the_fit_prices_each_row_with_the_kernels_it_ran() -> None:
    """A row that names its kernels (gpt-oss on vLLM Hopper under VLLM_MXFP4_USE_MARLIN=1) is priced with
    them on the fit's analytic path, as the simulation prices it: Marlin's W4A16 experts run the prefill
    slower than the stack's default triton kernel; each fit-path deployment carries the row's kernels."""
    from cloudmatrix.catalog.corpus import load_rows
    from cloudmatrix.studies.stack_fit import base_times, row_deployment

    rows = [r for r in load_rows("inferencemax-public") if r.kernels and (r.workload.concurrency or 0) <= 8]
    assert rows
    for row in rows[:3]:
        assert row.aggregated is not None
        dep = row_deployment(row, row.aggregated, Phase.AGGREGATED, 1024, 1024, batch_per_chip=1.0)
        assert dep.kernels == tuple(row.kernels)
        plain = row.model_copy(update={"kernels": []})
        assert base_times(row).ttft_ms > base_times(plain).ttft_ms, row.id
