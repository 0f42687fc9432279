import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.cost import comm
from cloudmatrix.cost.ops import Leg, LinkRole, Op, OpClass, Stream, Transfer, new_op
from cloudmatrix.cost.pricing import Pricer

HW = load_hardware("cloudmatrix384")
CHIP = HW.chip
PX = Pricer(HW, None)


def op_time_s(op: Op, core_share: float = 1.0) -> float:
    return PX.price(op, core_share).time_s


@given(
    st.sampled_from(list(OpClass)),
    st.sampled_from(list(Stream)),
    st.floats(0, 1e18),
    st.floats(0, 1e15),
    st.sampled_from(["bf16", "int8", "fp8"]),
    st.sampled_from(["", "dense", "grouped"]),
    st.floats(0, 1e6),
    st.integers(1, 8),
    st.floats(0, 512),
)
@settings(max_examples=50, deadline=None)
def test_new_op_is_the_op_its_fields_make(
    op_class, stream, flops, nbytes, precision, kernel, rows, split, groups
) -> None:
    """The builders' positional maker sets every field, to the value the dataclass's constructor would."""
    legs = (Leg(Transfer.BULK, LinkRole.SCALE_UP, 1.0, 3, True),)
    made = new_op("n", op_class, stream, flops, nbytes, precision, kernel, rows, "int8", split, groups, legs)
    expected = Op(
        name="n", op_class=op_class, stream=stream, flops=flops, hbm_bytes=nbytes, precision=precision,
        kernel=kernel, rows=rows, weights="int8", split=split, groups=groups, legs=legs,
    )  # fmt: skip
    assert made == expected
    assert new_op("m", op_class, stream) == Op(name="m", op_class=op_class, stream=stream)  # the defaults


def test_memory_bound_gemm_closed_form() -> None:
    op = Op(name="w", op_class=OpClass.GEMM, stream=Stream.ATTENTION, flops=1e9, hbm_bytes=1e9, precision="int8")
    mem = 1e9 / (CHIP.efficiency.gemm_memory.value * 1600e9)
    assert op_time_s(op) == pytest.approx(mem + CHIP.launch_us.value * 1e-6, rel=1e-12)
    assert PX.price(op).roofline_s == pytest.approx(1e9 / 1600e9)


def test_compute_bound_gemm_and_core_share() -> None:
    op = Op(name="c", op_class=OpClass.GEMM, stream=Stream.MOE, flops=1e13, hbm_bytes=1e6, precision="int8")
    eff = CHIP.efficiency.gemm_compute.value * CHIP.efficiency.gemm_serving.value
    full = 1e13 / (eff * 752e12)
    assert op_time_s(op) == pytest.approx(full + CHIP.launch_us.value * 1e-6)
    third = op_time_s(op, core_share=8 / 24) - CHIP.launch_us.value * 1e-6
    assert third == pytest.approx(3 * full)


def test_attention_uses_bf16_peak_and_mla_efficiency() -> None:
    op = Op(name="a", op_class=OpClass.ATTENTION, stream=Stream.ATTENTION, flops=1e12, hbm_bytes=0.0)
    expected = 1e12 / (0.654 * 376e12) + CHIP.launch_us.value * 1e-6
    assert op_time_s(op) == pytest.approx(expected)


def test_pricing_takes_arrays_through_the_same_arithmetic() -> None:
    """Many shapes of one op priced at once give each shape's scalar price exactly."""
    np = pytest.importorskip("numpy")
    flops, nbytes = np.array([0.0, 1e9, 1e12, 1e13]), np.array([1e6, 1e9, 0.0, 1e8])
    for op_class, precision in ((OpClass.GEMM, "int8"), (OpClass.ATTENTION, "bf16"), (OpClass.VECTOR, "bf16")):
        many = PX.price(
            Op(name="x", op_class=op_class, stream=Stream.MOE, flops=flops, hbm_bytes=nbytes, precision=precision), 0.5
        )
        for i, (f, b) in enumerate(zip(flops.tolist(), nbytes.tolist(), strict=True)):
            one = PX.price(
                Op(name="x", op_class=op_class, stream=Stream.MOE, flops=f, hbm_bytes=b, precision=precision), 0.5
            )
            assert [float(v[i]) for v in many[:5]] == list(one[:5])


def test_distinct_destinations() -> None:
    """Expected distinct dies among a token's top-k experts (hypergeometric)."""
    assert comm.distinct_destinations(256, 1, 256, 8) == pytest.approx(8.0)
    assert comm.distinct_destinations(256, 256, 1, 8) == 1.0
    ep8 = comm.distinct_destinations(256, 32, 8, 8)
    assert ep8 == pytest.approx(8 * (1 - math.comb(224, 8) / math.comb(256, 8)))
    assert 5.2 < ep8 < 5.4


def test_fused_comm_closed_form() -> None:
    ub = HW.system.planes.scale_up
    t, sol = comm.ep_fused_s(ub, "combine", 1e6, ep=320)
    c = ub.ep_comm
    assert t == pytest.approx(c.base_latency_us.value * 1e-6 + 1e6 / (c.combine_efficiency.value * 196e9))
    assert sol == pytest.approx(1e6 / 196e9)
    ib = load_hardware("hgx-h800").system.planes.scale_out
    t8, _ = comm.ep_fused_s(ib, "dispatch", 1e6, ep=8)
    t256, _ = comm.ep_fused_s(ib, "dispatch", 1e6, ep=256)
    assert t256 - t8 == pytest.approx(5 * ib.ep_comm.sync_us_per_doubling.value * 1e-6)  # 5 doublings


def test_messages_per_token_depends_on_the_operator() -> None:
    ub, ib = HW.system.planes.scale_up, load_hardware("hgx-h800").system.planes.scale_out
    assert comm.messages_per_token(ub, 256, 32, 8, 8) == pytest.approx(comm.distinct_destinations(256, 32, 8, 8))
    assert comm.messages_per_token(ib, 256, 32, 8, 8) == 8.0  # DeepEP low-latency: one message per expert


def test_pipeline_schedule() -> None:
    from cloudmatrix.cost.pipeline import period, segments

    assert period([(0, 10), (1, 10)]) == pytest.approx(20)  # balanced: the two microbatches interleave
    assert period([(0, 5), (1, 20)]) == pytest.approx(40)  # the communication resource binds
    assert period([(0, 10), (1, 5), (0, 10), (1, 5)]) == pytest.approx(40)
    assert segments([0, 0, 1, 0], [1.0, 2.0, 3.0, 4.0]) == [(0, 3.0), (1, 3.0), (0, 4.0)]


def _scheduled_period(resources: list[int], durations: list[float], layers: int) -> float:
    """The schedule step by step, as the pipeline states it: merge consecutive ops on one resource, fold a
    last stage on the first stage's resource into it, then each stage for microbatch A then B, layer after
    layer, each resource running one stage at a time; the mean per layer over the second half."""
    stages: list[tuple[int, float]] = []
    for r, d in zip(resources, durations, strict=True):
        if stages and stages[-1][0] == r:
            stages[-1] = (r, stages[-1][1] + d)
        else:
            stages.append((r, d))
    if len(stages) > 1 and stages[0][0] == stages[-1][0]:
        stages = [(stages[0][0], stages[-1][1] + stages[0][1]), *stages[1:-1]]
    free = dict.fromkeys((r for r, _ in stages), 0.0)
    done = [0.0, 0.0]
    marks = [0.0, 0.0]
    for layer in range(layers):
        if layer == layers // 2:
            marks = list(done)
        for r, d in stages:
            for mb in (0, 1):
                start = free[r]
                done[mb] = free[r] = (start if start > done[mb] else done[mb]) + d
    return max(done[0] - marks[0], done[1] - marks[1]) / (layers - layers // 2)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0.0, 1.0, 3.0]) | st.floats(0.0, 1e4)), min_size=1, max_size=12
    ),
    st.integers(1, 10),
)
def test_pipeline_period_is_the_schedule_to_the_last_bit(ops: list[tuple[int, float]], layers: int) -> None:
    """The two-resource shortcut and the one-pass stage merge give exactly the step-by-step schedule's floats
    (two resources or three, ties, zero-length stages, any number of layers)."""
    from cloudmatrix.cost.pipeline import ops_period, period, segments

    resources, durations = [r for r, _ in ops], [d for _, d in ops]
    expected = _scheduled_period(resources, durations, layers)
    assert period(segments(resources, durations), layers) == expected
    assert ops_period(resources, durations, layers) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1.0, 5000.0), min_size=2, max_size=8),
    st.integers(0, 7),
    st.floats(-0.5, 0.5),
)
def test_pipeline_period_is_continuous_and_bounded(durations: list[float], at: int, nudge_us: float) -> None:
    """The two-batch-overlap order makes the period a cycle mean: between the busiest resource's load and
    the serial time, and moving one stage by dt moves it by at most 2 dt per layer (the greedy schedule
    jumped by milliseconds when a stage moved by microseconds)."""
    from cloudmatrix.cost.pipeline import period

    stages = [(i % 2, d) for i, d in enumerate(durations)]
    p = period(stages)
    busiest = max(2 * sum(d for r, d in stages if r == k) for k in (0, 1))
    assert busiest - 1e-6 <= p <= 2 * sum(durations) + 1e-6
    i = at % len(stages)
    moved = [(r, d + nudge_us if j == i else d) for j, (r, d) in enumerate(stages)]
    assert abs(period(moved) - p) <= 2 * abs(nudge_us) + 1e-6


def test_pipeline_order_is_the_two_batch_overlap() -> None:
    """A stage of microbatch B never runs before the same stage of A: a long combine is not hidden behind a
    short stage of the other microbatch (the engine's order, not whichever could start first)."""
    from cloudmatrix.cost.pipeline import period

    # compute 1, combine 10, compute 1: B's combine waits for A's; the comm resource binds at 2 x 10
    assert period([(0, 1.0), (1, 10.0)]) == pytest.approx(20.0)
    # a trailing stage on the first stage's resource joins the next layer's first stage
    assert period([(0, 3.0), (1, 4.0), (0, 1.0)]) == pytest.approx(period([(0, 4.0), (1, 4.0)]))


def test_rdma_transfer() -> None:
    rdma = HW.system.planes.scale_out
    t = comm.transfer_s(rdma, 25e9 * 0.85, dies=1)
    assert t == pytest.approx(1.0 + rdma.latency_us.value * 1e-6)


@pytest.mark.parametrize("chip_system", ["cloudmatrix384", "atlas-800i-a2", "hgx-h200", "mi300x"])
@pytest.mark.parametrize("share", [1.0, 1 / 3])
def test_vector_ops_run_on_the_vector_engines_where_the_die_has_them(chip_system: str, share: float) -> None:
    """A compute-bound vector op on an Ascend die is priced at its AIV rate (die.vector_tops), never at the
    cube's peak; where SMs do both (no vector_tops) it keeps the die's peak."""
    hw = load_hardware(chip_system)
    die, eff = hw.chip.die, hw.chip.efficiency.vector_compute.value
    op = Op(name="v", op_class=OpClass.VECTOR, stream=Stream.ATTENTION, flops=1e12, hbm_bytes=1.0)
    price = Pricer(hw, None).price(op, share)
    peak = die.vector_tops.value * 1e12 if die.vector_tops is not None else die.peak_flops("bf16")
    launch = hw.chip.launch_us.value * 1e-6
    assert price.time_s == pytest.approx(1e12 / (eff * peak * share) + launch)
    assert (die.vector_tops is not None) == (hw.chip.family == "ascend")
    if die.vector_tops is not None:
        assert die.vector_tops.value * 1e12 < die.peak_flops("bf16") / 10
