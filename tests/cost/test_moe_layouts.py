"""MoE layouts: attention TP x DP, expert TP and EP (EP1 included). Each layout's communication, per-die
expert work and memory follow closed forms; FLOPs of the group are conserved across layouts."""

import dataclasses

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cost.kernels import ACT_BYTES
from cloudmatrix.cost.layers import layer_ops
from cloudmatrix.cost.memory import expert_weights_per_layer, memory_use
from cloudmatrix.cost.pricing import Pricer
from cloudmatrix.deploy import BYTES_PER_ELEMENT, Deployment, MoeComm, Phase, plan
from cloudmatrix.errors import CloudMatrixError, InfeasibleDeploymentError
from cloudmatrix.estimate import estimate

B200, H200 = load_hardware("hgx-b200"), load_hardware("hgx-h200")
OSS, R1 = load_model("gpt-oss-120b"), load_model("deepseek-r1")
# TensorRT-LLM's three layouts of gpt-oss-120b on 2 B200 (validation corpus, 1k/8k at concurrency 64)
BASE = Deployment(
    phase=Phase.DECODE, num_chips=2, batch_per_chip=32, input_len=1024, output_len=8192, precision="fp4", eplb="none"
)
LAYOUTS = {
    "tp2-ep2-dpa": dict(tp=1, ep=2, moe_tp=1),
    "tp2-ep1-nodpa": dict(tp=2, ep=1, moe_tp=2),
    "tp2-ep1-dpa": dict(tp=1, ep=1, moe_tp=2),
}


def _plan(hw, model, d: Deployment, **kw):
    return plan(dataclasses.replace(d, **kw), hw, model)


def _ops(p) -> dict:
    return {op.name: op for op in layer_ops(p, moe=True)}


@pytest.mark.parametrize(
    ("layout", "mode", "comm_ops"),
    [
        ("tp2-ep2-dpa", MoeComm.DISPATCH, {"dispatch", "combine"}),
        ("tp2-ep1-nodpa", MoeComm.ALL_REDUCE, {"moe_all_reduce", "attn_all_reduce"}),
        ("tp2-ep1-dpa", MoeComm.ALL_GATHER, {"moe_all_gather", "moe_reduce_scatter"}),
    ],
)
def test_each_layout_sends_what_it_should(layout: str, mode: MoeComm, comm_ops: set[str]) -> None:
    p = _plan(B200, OSS, BASE, **LAYOUTS[layout])
    assert p.moe_comm == mode
    names = {n for n, op in _ops(p).items() if op.op_class == "comm"}
    assert names == comm_ops


def test_group_flops_are_conserved_across_layouts() -> None:
    """Per die, the experts compute the same full-width rows whatever the layout (perfect balance)."""
    flops = {}
    for name, kw in LAYOUTS.items():
        p = _plan(B200, OSS, dataclasses.replace(BASE, eplb="perfect"), **kw)
        flops[name] = _ops(p)["experts"].flops
    # the group's 64 tokens x top-4 routed rows, half on each die
    expected = 64 * OSS.moe.top_k / 2 * 2 * OSS.expert_params()
    assert flops == pytest.approx({n: expected for n in LAYOUTS})


def test_gathered_collectives_move_the_ring_bytes() -> None:
    p = _plan(B200, OSS, BASE, **LAYOUTS["tp2-ep1-dpa"])
    ops = _ops(p)
    bw = B200.system.planes.scale_up.bw_gb_s_per_die.value * 1e9
    group_tokens = 2 * 32  # each die's 32 tokens, gathered over the two dies
    gathered = group_tokens * OSS.hidden * p.dispatch_bytes
    px = Pricer(B200, None)
    assert px.price(ops["moe_all_gather"]).roofline_s == pytest.approx(gathered / 2 / bw)
    scattered = group_tokens * OSS.hidden * ACT_BYTES
    assert px.price(ops["moe_reduce_scatter"]).roofline_s == pytest.approx(scattered / 2 / bw)
    reduce = _ops(_plan(B200, OSS, BASE, **LAYOUTS["tp2-ep1-nodpa"]))["moe_all_reduce"]
    assert px.price(reduce).roofline_s == pytest.approx(2 * 0.5 * 64 * OSS.hidden * ACT_BYTES / bw)


def test_expert_weights_follow_the_layout() -> None:
    wb = BYTES_PER_ELEMENT["fp4"]
    full = OSS.moe.num_routed * OSS.expert_params()
    ep1_tp2 = expert_weights_per_layer(_plan(B200, OSS, BASE, **LAYOUTS["tp2-ep1-dpa"], redundant_experts=0))
    ep2 = expert_weights_per_layer(_plan(B200, OSS, BASE, **LAYOUTS["tp2-ep2-dpa"], redundant_experts=0))
    replicated = expert_weights_per_layer(_plan(B200, OSS, BASE, tp=1, ep=1, moe_tp=1, redundant_experts=0))
    assert ep1_tp2 == pytest.approx(full / 2) and ep2 == pytest.approx(full / 2)
    assert replicated == pytest.approx(full)  # EP1 without expert TP: every die holds every expert
    assert wb == 0.5


def test_mla_tp_replicates_the_latent_cache_and_down_projections() -> None:
    """MLA's latent has no head axis: a TP group's dies each hold and read the group's whole cache, and each
    computes the down-projections; the up-projections and the attention heads split."""
    d = Deployment(phase=Phase.DECODE, num_chips=8, batch_per_chip=16, input_len=2048, precision="fp8")
    dp, tp = _plan(H200, R1, d), _plan(H200, R1, d, tp=8)
    assert tp.moe_comm == MoeComm.ALL_REDUCE and dp.moe_comm == MoeComm.DISPATCH
    core_dp, core_tp = _ops(dp)["attention_core"], _ops(tp)["attention_core"]
    assert core_tp.flops == pytest.approx(core_dp.flops)  # 8x the sequences, 1/8 of the heads
    kv_read = tp.seqs_per_die * tp.kv_len * (R1.attention.kv_lora_rank + R1.attention.qk_rope_head_dim)
    assert core_tp.hbm_bytes > kv_read * tp.kv_bytes > 7.9 * kv_read * dp.kv_bytes / 8
    assert memory_use(tp).kv_bytes == pytest.approx(8 * memory_use(dp).kv_bytes)
    down, q_up, kv_up = R1.mla_projection_params()
    o_proj = R1.attention.num_heads * R1.attention.v_head_dim * R1.hidden
    assert R1.attention_params(8) == pytest.approx(down + (q_up + kv_up + o_proj) / 8)
    assert estimate(H200, R1, dataclasses.replace(d, tp=8)).tpot_s > 0


def test_stack_memory_setting_sets_the_reserve() -> None:
    """vLLM fills 90 % of HBM by default: the other 10 % is kept back; a deployment's reserve overrides."""
    d = Deployment(phase=Phase.DECODE, num_chips=8, batch_per_chip=16, input_len=1024, precision="fp8")
    cap = H200.chip.hbm_bytes_per_die
    assert memory_use(_plan(H200, R1, d, stack="vllm")).reserve_bytes == pytest.approx(0.1 * cap)
    assert memory_use(_plan(H200, R1, d, stack="vllm", reserve_gb=2.0)).reserve_bytes == pytest.approx(2e9)
    assert memory_use(_plan(H200, R1, d)).reserve_bytes == pytest.approx(H200.chip.runtime_reserve_gb.value * 1e9)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(moe_tp=7), "expert TP 7 must be between 1 and the 2 dies"),
        (dict(tp=2, ep=1, moe_tp=1), r"attention TP group \(2 dies\) must sit inside one expert group"),
        (dict(ep=2, moe_tp=2), r"EP2 x expert TP2 = 4 dies must divide the 2 dies"),
        (dict(moe_tp=0), r"moe_tp \(--moe-tp\): got 0; expected an integer >= 1"),
        (dict(reserve_gb=500.0), "reserve 500.0 GB must be between 0 and the 180 GB"),
    ],
)
def test_bad_layouts_are_refused_with_the_numbers(kw: dict, message: str) -> None:
    with pytest.raises(CloudMatrixError, match=message):
        _plan(B200, OSS, BASE, **kw)


def test_dense_models_have_no_expert_tp() -> None:
    llama = load_model("llama-3.1-405b")
    d = Deployment(phase=Phase.DECODE, num_chips=8, batch_per_chip=8, input_len=1024, precision="fp8", tp=8)
    with pytest.raises(InfeasibleDeploymentError, match="is dense: it has no experts for expert TP 2"):
        _plan(H200, llama, d, moe_tp=2)


def test_offloaded_experts_stream_over_the_cpu_link_and_leave_hbm() -> None:
    """GB200: 40 GB of expert weights per die in Grace memory; a batch that touches every expert streams
    all of it each step over NVLink-C2C (the per-GPU share, at its efficiency)."""
    gb200 = load_hardware("gb200-nvl72")
    d = Deployment(phase=Phase.DECODE, num_chips=4, ep=4, batch_per_chip=32, input_len=1024, precision="fp4")
    base, off = _plan(gb200, R1, d), _plan(gb200, R1, d, offload_gb=40.0)
    assert memory_use(base).weights_bytes - memory_use(off).weights_bytes == pytest.approx(40e9)
    stream = _ops(off)["expert_offload_stream"]
    cpu = gb200.system.cpu
    active = min(expert_work_slots(off) / off.layout.routed_slots_per_die, 1.0)
    per_layer = 40e9 / R1.num_moe_layers * active
    bw = cpu.link_gb_s_per_chip.value * 1e9
    assert Pricer(gb200, None).comm(stream.legs)[0] == pytest.approx(per_layer / (bw * cpu.link_efficiency.value))
    assert "expert_offload_stream" not in _ops(base)
    assert estimate(gb200, R1, dataclasses.replace(d, offload_gb=40.0)).tpot_s > estimate(gb200, R1, d).tpot_s


def expert_work_slots(p) -> float:
    from cloudmatrix.cost.moe import expert_work

    return expert_work(p, p.tokens_per_die).slots


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(offload_gb=-1.0), r"offload_gb \(--offload-gb\): got -1; expected a number >= 0"),
        (dict(offload_gb=5000.0), "exceeds the 960 GB of CPU memory per node"),
    ],
)
def test_bad_offloads_are_refused(kw: dict, message: str) -> None:
    gb200 = load_hardware("gb200-nvl72")
    with pytest.raises(CloudMatrixError, match=message):
        d = Deployment(phase=Phase.DECODE, num_chips=4, ep=4, batch_per_chip=32, input_len=1024, precision="fp4", **kw)
        plan(d, gb200, R1)


def test_offload_more_than_the_experts_is_refused() -> None:
    gb200 = load_hardware("gb200-nvl72")
    d = Deployment(
        phase=Phase.DECODE, num_chips=72, batch_per_chip=8, input_len=1024, precision="fp4", offload_gb=150.0
    )
    with pytest.raises(InfeasibleDeploymentError, match="is not less than the die's"):
        estimate(gb200, R1, d)
