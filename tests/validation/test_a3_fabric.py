"""SGLang on A3 runs its MoE dispatch and combine with DeepEP-Ascend, which on A3 uses the SuperPoD's HCCS
fabric inside and between nodes (no RDMA path): the rows' pools span nodes on that fabric, the twin's price
of those operators there is DeepEP-Ascend's published microbenchmark, and a row's launched forward (no
two-batch overlap) reaches the pools it runs."""

import pytest

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.validation import ValidationRow, corpus_path, load_yaml_rows
from cloudmatrix.cost.layers import ffn_ops
from cloudmatrix.cost.pricing import pricer
from cloudmatrix.deploy import Deployment, Eplb, Phase, plan
from cloudmatrix.studies.stack_fit import row_deployment
from cloudmatrix.studies.validate_run import scenario_for

R1 = load_model("deepseek-r1")
ROWS = load_yaml_rows(corpus_path("sglang-ascend"))

# sgl-project/sgl-kernel-npu README.md, "Low-Latency Kernels with Pure HCCS" (A3 384 SuperPOD, 128 tokens per
# batch, hidden 7,168, top-8, INT8 dispatch, BF16 combine): EP -> (dispatch µs, combine µs)
DEEPEP_ASCEND_LL = {8: (132.0, 126.0), 16: (139.0, 135.0), 32: (153.0, 151.0)}


def _ep_us(system: str, ep: int) -> dict[str, float]:
    """The twin's dispatch and combine of 128 tokens a die at ``ep`` (without the op's launch), µs."""
    hw = load_hardware(system)
    d = Deployment(
        phase=Phase.DECODE,
        num_chips=ep // hw.chip.num_dies,
        ep=ep,
        batch_per_chip=128 * hw.chip.num_dies,
        input_len=1024,
        output_len=1,
        precision="int8",
        activation_precision="int8",
        eplb=Eplb("none"),
        redundant_experts=0,
        stack="sglang-ascend",
    )
    p = plan(d, hw, R1)
    px = pricer(p)
    return {
        op.name: px.price(op).time_s * 1e6 - px.launch_us
        for op in ffn_ops(p, True, 1.0)
        if op.name in ("dispatch", "combine")
    }


@pytest.mark.parametrize("ep", sorted(DEEPEP_ASCEND_LL))
def test_dispatch_and_combine_on_the_superpod_fabric_match_deepep_ascend(ep: int) -> None:
    """The CANN fused operators' price on the UB/HCCS plane (fitted on P3 Table 6, never on these rows) is
    DeepEP-Ascend's published low-latency latency within 20 %."""
    twin = _ep_us("cloudmatrix384", ep)
    for name, measured in zip(("dispatch", "combine"), DEEPEP_ASCEND_LL[ep], strict=True):
        assert twin[name] == pytest.approx(measured, rel=0.20)


def test_across_nodes_over_roce_the_operators_would_be_several_times_slower() -> None:
    """Why the rows are not priced on a cluster of stand-alone A3 nodes: its EP32 crosses nodes over RoCE,
    3-6 times DeepEP-Ascend's measured latency."""
    twin = _ep_us("atlas-800t-a3", 32)
    assert twin["dispatch"] > 3 * DEEPEP_ASCEND_LL[32][0]
    assert twin["combine"] > 5 * DEEPEP_ASCEND_LL[32][1]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_every_pool_expert_group_sits_inside_the_systems_scale_up_domain(row: ValidationRow) -> None:
    """DeepEP-Ascend has no RDMA path on A3: a pool's EP group must be inside the HCCS domain it ran on."""
    hw = load_hardware(row.system)
    for pool in (row.prefill, row.decode):
        assert pool is not None
        assert pool.chips <= hw.system.scale_up_domain_chips.value


@pytest.mark.parametrize("microbatch", [True, False, None])
def test_a_rows_microbatch_setting_reaches_both_pools_and_the_analytic_step(microbatch: bool | None) -> None:
    """A stated setting is what the pools run; unset, the twin's default (the faster graph) applies."""
    row = ROWS[1]
    assert row.prefill is not None and row.decode is not None
    row = row.model_copy(
        update={
            "prefill": row.prefill.model_copy(update={"microbatch": microbatch}),
            "decode": row.decode.model_copy(update={"microbatch": microbatch}),
        }
    )
    scenario = scenario_for(row, R1, [])
    assert scenario.prefill is not None and scenario.decode is not None
    assert scenario.decode.microbatch is microbatch
    assert scenario.prefill.microbatch is microbatch
    dep = row_deployment(row, row.decode, Phase.DECODE, 3500, 1000, batch_per_chip=2, kv_len=4000)
    assert dep.microbatch is microbatch


def test_the_shipped_rows_run_serial_forwards_as_launched() -> None:
    """The recipes pass no --enable-two-batch-overlap (off by default): every pool of every row says so."""
    for row in ROWS:
        assert row.prefill is not None and row.decode is not None
        assert row.prefill.microbatch is False and row.decode.microbatch is False
