"""Attention-FFN disaggregation: the ping-pong schedule in closed form, the crossing priced on the plane the
pools span, memory per pool, refusals, and estimate / simulate / compare / plan end to end on CloudMatrix384
for DeepSeek-R1 and DeepSeek-V3.2."""

import json

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cli.app import app
from cloudmatrix.cost import comm
from cloudmatrix.cost.afd import afd_plans, crossing_ops
from cloudmatrix.cost.afd_memory import attention_memory, ffn_memory
from cloudmatrix.cost.afd_pipeline import ATTENTION, FFN, TO_ATTENTION, TO_FFN, schedule
from cloudmatrix.cost.afd_result import estimate_afd
from cloudmatrix.cost.memory import expert_weights_per_layer, weights_per_die
from cloudmatrix.cost.moe import dispatch_message_bytes, expert_work
from cloudmatrix.cost.pricing import pricer
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.deployment import AfdDeployment
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.inputs import InputError

MODELS = ("deepseek-r1", "deepseek-v3.2")


def _afd(attention: int = 96, ffn: int = 64, batch: float = 96, mb: int = 2, **kw: object) -> AfdDeployment:
    a = Deployment(
        phase=Phase.DECODE,
        num_chips=attention,
        batch_per_chip=batch,
        input_len=4096,
        output_len=1024,
        mtp=1,
        mtp_acceptance=0.7,
        eplb=Eplb.DEFAULT,
        stack="cloudmatrix-infer",
    )
    return AfdDeployment(attention=a, ffn_chips=ffn, microbatches=mb, **kw)  # type: ignore[arg-type]


# ---- the schedule ----------------------------------------------------------------------------------------
def test_one_microbatch_runs_every_stage_in_turn() -> None:
    stages = [(ATTENTION, 3.0), (TO_FFN, 1.0), (FFN, 2.0), (TO_ATTENTION, 1.0)] * 5
    s = schedule(stages, 1)
    assert s.makespan_s == pytest.approx(35.0)
    assert s.busy_s == pytest.approx((15.0, 5.0, 10.0, 5.0))


@pytest.mark.parametrize("layers", [1, 4, 61])
def test_two_balanced_microbatches_ping_pong(layers: int) -> None:
    """Attention and experts of equal time a, no crossing: each pool is busy 2a per layer and the first
    attention stage is the only fill, so the step is 2La + a (MegaScale-Infer's ping-pong)."""
    a = 1.5
    s = schedule([(ATTENTION, a), (FFN, a)] * layers, 2)
    assert s.makespan_s == pytest.approx(2 * layers * a + a)
    assert s.busy_s[ATTENTION] == pytest.approx(2 * layers * a)


def test_enough_microbatches_hide_the_crossing() -> None:
    """With m >= 2(1 + t/f) microbatches the crossing leaves the pools' steady period at m·a (only fill and
    drain grow); with two it shows."""
    a, t, layers = 1.0, 0.5, 20
    stages = [(ATTENTION, a), (TO_FFN, t), (FFN, a), (TO_ATTENTION, t)] * layers
    hidden = schedule(stages, 3)
    assert hidden.makespan_s - 3 * layers * a <= 2 * (a + t) + 1e-9  # fill and drain only
    exposed = schedule(stages, 2)
    assert exposed.makespan_s - 2 * layers * a > layers * t


# ---- pricing -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("system", "attention", "ffn", "role"),
    [("cloudmatrix384", 96, 64, "scale_up"), ("hgx-h800", 16, 16, "scale_out")],
)
def test_crossing_closed_form(system: str, attention: int, ffn: int, role: str) -> None:
    """Attention → FFN: each attention die sends its microbatch's tokens to their experts' dies (one message
    per distinct die), the busiest expert die receives its rows; the slower end sets a fused dispatch priced
    on the plane both pools span (UB inside the supernode, RDMA between H800 nodes)."""
    hw, model = load_hardware(system), load_model("deepseek-r1")
    afd = _afd(attention, ffn, batch=32, mb=2)
    if system == "hgx-h800":
        afd = AfdDeployment(
            attention=Deployment(**{**afd.attention.__dict__, "precision": "fp8", "stack": None}),  # type: ignore[arg-type]
            ffn_chips=ffn,
            microbatches=2,
        )
    plans = afd_plans(afd, hw, model)
    to_ffn, to_attention = crossing_ops(plans, 0.5)
    assert {leg.role.value for leg in to_ffn.legs} == {role}
    plane = comm.plane_for(hw, plans.group)
    lay = plans.ffn.layout
    assert lay is not None
    groups = min(lay.routed_dies, 256)
    dests = comm.messages_per_token(plane, 256, 256 // groups, groups, 8) + (1 if lay.shared_dies else 0)
    sent = plans.attention.tokens_per_die * 0.5 * dests * dispatch_message_bytes(plans.attention, plane)
    received = expert_work(plans.ffn, plans.ffn.tokens_per_die * 0.5).received
    assert to_ffn.legs[0].bytes == pytest.approx(sent)
    assert to_ffn.legs[1].bytes == pytest.approx(received * dispatch_message_bytes(plans.attention, plane))
    expected = max(comm.ep_fused_s(plane, "dispatch", leg.bytes, plans.group)[0] for leg in to_ffn.legs)
    launch = hw.chip.launch_us.value * 1e-6
    assert pricer(plans.attention).price(to_ffn).time_s == pytest.approx(expected + launch)
    assert to_attention.legs[0].bytes == pytest.approx(received * model.hidden * 2)


@pytest.mark.parametrize("model", MODELS)
def test_breakdown_sums_to_the_step(model: str) -> None:
    est = estimate_afd("cloudmatrix384", model, _afd())
    assert sum(est.step.breakdown_us.values()) == pytest.approx(est.step.step_s * 1e6)
    util = est.step.utilisation()
    assert all(0 < u <= 1 + 1e-9 for u in util.values())
    assert est.tpot_s == pytest.approx(est.step.step_s / 1.7)
    # output tokens per step over both pools' chips
    assert est.throughput_per_chip_tok_s == pytest.approx(96 * 96 * 1.7 / est.step.step_s / 160)


# ---- memory ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_memory_per_pool(model: str) -> None:
    """Attention dies hold no experts; expert dies hold no KV, and their experts are the layout's slots."""
    plans = afd_plans(_afd(), load_hardware("cloudmatrix384"), load_model(model))
    a, f = attention_memory(plans), ffn_memory(plans)
    m = plans.attention.model
    layers = m.num_moe_layers + 1  # and the MTP block
    expected = weights_per_die(plans.attention) - layers * expert_weights_per_layer(plans.attention) * 1.0
    assert a.weights_bytes == pytest.approx(expected)
    assert f.kv_bytes == 0.0
    assert f.weights_bytes == pytest.approx(layers * expert_weights_per_layer(plans.ffn) * 1.0)
    assert a.kv_bytes == pytest.approx(plans.attention.seqs_per_die * m.kv_bytes(5120, 2.0))


def test_refusals_name_the_pool() -> None:
    with pytest.raises(InfeasibleDeploymentError, match="AFD FFN pool"):
        estimate_afd("cloudmatrix384", "deepseek-r1", _afd(96, 2))
    with pytest.raises(InfeasibleDeploymentError, match="AFD attention pool"):
        estimate_afd("cloudmatrix384", "deepseek-r1", _afd(16, 64, batch=4000))
    with pytest.raises(InfeasibleDeploymentError, match="needs 400 chips"):
        estimate_afd("cloudmatrix384", "deepseek-r1", _afd(200, 200))
    with pytest.raises(InfeasibleDeploymentError, match="dense"):
        estimate_afd("hgx-h100", "llama-3.1-405b", _afd(8, 8))
    with pytest.raises(InfeasibleDeploymentError, match="holds no experts"):
        estimate_afd(
            "cloudmatrix384",
            "deepseek-r1",
            AfdDeployment(attention=Deployment(**{**_afd().attention.__dict__, "ep": 192}), ffn_chips=64),
        )  # type: ignore[arg-type]
    with pytest.raises(InputError, match="microbatches"):
        _afd(mb=0)


# ---- end to end ----------------------------------------------------------------------------------------------
runner = CliRunner()


@pytest.mark.parametrize("model", MODELS)
def test_estimate_cli(model: str) -> None:
    r = runner.invoke(app, ["estimate", "--model", model, "--chips", "96", "--ffn-chips", "64", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["afd"]["plane"] == "scale_up"
    assert d["chips"] == 160
    assert d["same_dies"]["throughput_per_chip_tok_s"] > 0
    assert runner.invoke(app, ["estimate", "--model", model, "--chips", "96", "--ffn-chips", "64"]).exit_code == 0
    bad = runner.invoke(
        app, ["estimate", "--model", model, "--chips", "96", "--ffn-chips", "64", "--microbatches", "99"]
    )
    assert bad.exit_code == 2
    assert len(bad.output.strip().splitlines()) == 1


@pytest.mark.parametrize("model", MODELS)
def test_simulate_cli(model: str) -> None:
    sets = ["decode.chips=96", "decode.ep=null", "decode.afd.ffn_chips=64", "requests=300", f"model={model}"]
    r = runner.invoke(app, ["simulate", *[a for s in sets for a in ("--set", s)], "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["num_requests"] == 300
    assert 0 < d["tpot_ms"]["p50"] < 50


@pytest.mark.parametrize("model", MODELS)
def test_compare_cli(model: str) -> None:
    args = ["compare", "--system", "cloudmatrix384,cloudmatrix384-afd", "--workload", "4k-1k", "--model", model]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    rows = {s["system"]: s for s in json.loads(r.output)["systems"]}
    afd = rows["cloudmatrix384-afd"]
    assert afd["feasible"] and rows["cloudmatrix384"]["feasible"]
    assert afd["tpot_ms"] <= 50
    assert afd["intervals"] == {}
    assert "no AFD measurement" in afd["why"]


def test_plan_cli_checks_the_best_in_simulation() -> None:
    args = ["plan", "--afd", "--workload", "4k-1k", "--chips", "96", "--top", "3", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    best = d["ranked"][0]
    assert best["attention_chips"] + best["ffn_chips"] <= 96 - 16
    assert best["tpot_ms"] <= 50
    ranked = [x["decode_tok_s_per_chip"] for x in d["ranked"]]
    assert ranked == sorted(ranked, reverse=True)
    assert d["check"]["requests_done"] > 0
    assert d["check"]["tpot_within_slo"]
    assert d["check"]["scenario"]["decode"]["afd"]["ffn_chips"] == best["ffn_chips"]


def test_plan_cli_v32_no_check() -> None:
    args = ["plan", "--afd", "--model", "deepseek-v3.2", "--workload", "4k-1k", "--chips", "96", "--no-check"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["ranked"] and "check" not in d


def test_simulate_refuses_an_ep_beside_afd() -> None:
    r = runner.invoke(app, ["simulate", "--set", "decode.chips=96", "--set", "decode.afd.ffn_chips=64"])
    assert r.exit_code == 2
    assert "decode.ep" in r.output
    assert len(r.output.strip().splitlines()) == 1
