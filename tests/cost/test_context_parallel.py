"""Prefill context parallelism: the KV all-gather in closed form on the plane the group spans, memory split
over the CP group, the refusals, the planner's axis and the SGLang-on-A3 DeepSeek-V3.2 64K row."""

import math

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cli.app import app
from cloudmatrix.cost.context_parallel import gathered_kv_bytes, kv_all_gather, kv_bytes_per_token_layer
from cloudmatrix.cost.memory import memory_use
from cloudmatrix.cost.pricing import pricer
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.units import GB_DECIMAL

V32_PROMPT = 64000


def _prefill(cp: int, chips: int = 16, tokens_per_chip: int = 4000, **kw: object) -> Deployment:
    return Deployment(
        phase=Phase.PREFILL,
        num_chips=chips,
        tokens_per_chip=tokens_per_chip,
        input_len=V32_PROMPT,
        attention_tp=1,
        cp=cp,
        microbatch=False,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("system", "cp", "role"),
    [("cloudmatrix384", 32, "scale_up"), ("atlas-800t-a3", 32, "scale_out"), ("atlas-800t-a3", 16, "scale_up")],
)
def test_all_gather_closed_form(system: str, cp: int, role: str) -> None:
    """Each rank receives the other cp - 1 ranks' KV of the layer: latent + rope key at the KV format and
    the indexer's key, as a ring all-gather over UB inside the supernode (or a node), RDMA beyond it."""
    hw, model = load_hardware(system), load_model("deepseek-v3.2")
    p = plan(_prefill(cp, chips=cp // 2), hw, model)
    tokens = p.tokens_per_die
    per_token = (512 + 64) * 2 + model.indexer_key_bytes_per_token() / model.num_layers
    assert kv_bytes_per_token_layer(p) == pytest.approx(per_token)
    (op,) = kv_all_gather(p, tokens)
    (leg,) = op.legs
    assert leg.role.value == role
    assert leg.bytes == pytest.approx((cp - 1) * tokens * per_token)
    plane = hw.system.planes.scale_up if role == "scale_up" else hw.system.planes.scale_out
    lat, eff = plane.link(leg.local)
    bw = plane.bw_gb_s_per_die.value * GB_DECIMAL
    expected = lat * math.ceil(math.log2(cp)) + leg.bytes / (eff * bw)
    assert pricer(p).price(op).time_s == pytest.approx(expected)


def test_no_gather_without_cp() -> None:
    p = plan(_prefill(1), load_hardware("atlas-800t-a3"), load_model("deepseek-v3.2"))
    assert kv_all_gather(p, p.tokens_per_die) == []
    assert gathered_kv_bytes(p) == 0.0


def test_step_carries_the_gather_once_per_layer() -> None:
    from cloudmatrix.estimate import estimate

    est = estimate("atlas-800t-a3", "deepseek-v3.2", _prefill(32))
    without = estimate("atlas-800t-a3", "deepseek-v3.2", _prefill(1))
    p = est.plan
    (op,) = kv_all_gather(p, p.tokens_per_die)
    per_layer_us = pricer(p).price(op).time_s * 1e6
    assert est.step.breakdown_us["cp_kv_all_gather"] == pytest.approx(per_layer_us * p.model.num_layers)
    # the rest of the step is the same work: CP adds its gather and nothing else
    assert est.step.step_s * 1e6 - without.step.step_s * 1e6 == pytest.approx(per_layer_us * p.model.num_layers)


@pytest.mark.parametrize("cp", [2, 8, 32])
def test_memory_divided_by_cp(cp: int) -> None:
    """One prompt per CP group: each rank holds 1/cp of its KV, plus one layer's gathered KV of the prompt."""
    hw, model = load_hardware("atlas-800t-a3"), load_model("deepseek-v3.2")
    dies = cp
    tokens_per_chip = V32_PROMPT // dies * hw.chip.num_dies  # the group's batch is exactly one prompt
    p = plan(_prefill(cp, chips=max(dies // 2, 1), tokens_per_chip=tokens_per_chip), hw, model)
    mem = memory_use(p)
    prompt_kv = model.kv_bytes(V32_PROMPT, 2.0)
    assert mem.kv_bytes == pytest.approx(prompt_kv / cp)
    assert gathered_kv_bytes(p) == pytest.approx(V32_PROMPT * kv_bytes_per_token_layer(p))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"phase": Phase.DECODE, "batch_per_chip": 4}, "splits a prompt's prefill"),
        ({"cp": 3}, "must divide the 32 dies"),
        ({"tp": 2}, "use tp 1"),
    ],
)
def test_refusals(change: dict[str, object], words: str) -> None:
    base = {"phase": Phase.PREFILL, "num_chips": 16, "tokens_per_chip": 4000, "input_len": V32_PROMPT, "cp": 32}
    with pytest.raises(InfeasibleDeploymentError, match=words):
        plan(Deployment(**(base | change)), load_hardware("atlas-800t-a3"), load_model("deepseek-v3.2"))  # type: ignore[arg-type]


runner = CliRunner()


def test_estimate_cli_cp() -> None:
    args = ["estimate", "--system", "cloudmatrix384", "--model", "deepseek-v3.2", "--phase", "prefill"]
    args += ["--chips", "16", "--tokens-per-chip", "4000", "--input-len", "64000", "--attention-tp", "1"]
    r = runner.invoke(app, [*args, "--cp", "32", "--no-microbatch", "--json"])
    assert r.exit_code == 0, r.output
    assert '"cp_kv_all_gather"' in r.output
    bad = runner.invoke(app, [*args, "--cp", "0"])
    assert bad.exit_code == 2
    assert "cp (--cp)" in bad.output


def test_sglang_v32_row_runs_with_cp() -> None:
    """The published layout (TP32 prefill with NSA context parallelism, EP32) maps to CP32 with attention TP 1
    and fits at the stack's own memory setting: no memory refusal, no reserve fallback."""
    from cloudmatrix.catalog.corpus import load_rows
    from cloudmatrix.sim.costs import StepCosts
    from cloudmatrix.studies.validate_run import scenario_for

    (row,) = [r for r in load_rows("sglang-ascend") if r.id == "sga-v32-w8a8-32c-64k3k"]
    notes: list[str] = []
    scenario = scenario_for(row, load_model(row.model), notes)
    assert scenario.prefill is not None
    assert (scenario.prefill.cp, scenario.prefill.tp, scenario.prefill.ep) == (32, 1, 32)
    StepCosts(scenario).check()
    assert notes == []


def test_planner_searches_cp_and_prunes_split_prompts() -> None:
    """A 64K prompt never lands on dies that do not share its KV: without CP (or a wide SP-TP-SP group) the
    candidate is pruned; CP32 candidates are searched."""
    from cloudmatrix.planner.space import SearchSpace, feasible_candidates

    hw, model = load_hardware("atlas-800t-a3"), load_model("deepseek-v3.2")
    space = SearchSpace(prefill_chips=(16,), decode_chips=(16,), context_parallel=(1, 32), precisions=("int8",))
    _, kept, pruned = feasible_candidates(hw, model, space, 32, V32_PROMPT, 3072)
    prefill = [c for c in kept if c.phase == Phase.PREFILL]
    assert pruned["prompt-split"] > 0
    assert any(c.cp == 32 for c in prefill)
    for c in prefill:
        assert c.tokens_per_chip / hw.chip.num_dies * max(c.attention_tp, c.cp) >= V32_PROMPT


@pytest.mark.parametrize("value", ["x", "0", "1,,2"])
def test_plan_cli_refuses_bad_cp(value: str) -> None:
    r = runner.invoke(app, ["plan", "--cp", value, "--no-check", "--json"])
    assert r.exit_code == 2
    assert "--cp" in r.output
    assert len(r.output.strip().splitlines()) == 1
