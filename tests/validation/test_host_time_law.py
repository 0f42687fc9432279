"""The host-time law an engine with no fit rows of its own is priced with out of group: the other engines'
cost per op launch of the step (least squares through zero) and their request time; it adds cost x launches to
a step, and a stack held out whole takes it from the other engines' rows on the same chip family."""

from dataclasses import dataclass, field

import pytest

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import host_times_basis, overridden_costs, stack_costs
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate
from cloudmatrix.studies import holdout_refit as hr
from cloudmatrix.studies.stack_fit import (
    FIT_CORPORA,
    BaseTimes,
    fit_pairs,
    fit_per_op,
    fit_rows,
    gap_taken_elsewhere,
)


@dataclass
class _Row:
    id: str
    measured: dict[str, float] = field(default_factory=dict)


def _pair(i: int, tpot_ms: float, ttft_ms: float, ops: float) -> tuple[_Row, BaseTimes]:
    base = BaseTimes(tpot_ms=2.0, ttft_ms=10.0, ttft_steps=1.5, ops=ops)
    return _Row(id=f"r{i}", measured={"tpot_ms": tpot_ms, "ttft_ms": ttft_ms}), base


def test_fit_per_op_closed_form() -> None:
    """Gaps of 1,000 µs at 100 ops and 3,000 µs at 300 ops: 10 µs per op exactly; the request time is the
    mean TTFT gap left once each of its 1.5 steps is priced at 10 µs x ops."""
    pairs = [_pair(0, 3.0, 40.0, 100.0), _pair(1, 5.0, 50.0, 300.0)]
    fit = fit_per_op(pairs)  # type: ignore[arg-type]
    assert fit.op_us == pytest.approx(10.0, abs=1e-12)
    # row 0: 40 - 10 - 1.5 x 1.0 = 28.5; row 1: 50 - 10 - 1.5 x 3.0 = 35.5
    assert fit.request_overhead_ms == pytest.approx(32.0, abs=1e-12)
    # gaps off the line: sum(g n) / sum(n^2) = (1000 x 100 + 1000 x 300) / (100^2 + 300^2) = 4 µs per op
    off = [_pair(0, 3.0, 40.0, 100.0), _pair(1, 3.0, 40.0, 300.0)]
    assert fit_per_op(off).op_us == pytest.approx(4.0, abs=1e-12)  # type: ignore[arg-type]
    # a negative gap clamps at zero (host time cannot be negative), and no rows fit nothing
    assert fit_per_op([_pair(0, 1.0, 5.0, 100.0)]).op_us == 0.0  # type: ignore[list-item]
    assert fit_per_op([]).op_us == 0.0 and fit_per_op([]).request_overhead_ms == 0.0


def test_step_op_us_adds_cost_times_launches() -> None:
    """A cost per op launch adds exactly cost x the step's launches (those a 1 µs rise of the chip's launch
    cost adds), on the entry's family only."""
    dep = Deployment(phase=Phase.DECODE, num_chips=8, tp=8, ep=1, moe_tp=8, batch_per_chip=1, input_len=1000,
                     output_len=1000, kv_len=1500, precision="fp8", activation_precision="fp8",
                     stack="vllm")  # fmt: skip
    plain = estimate("hgx-h200", "deepseek-r1", dep).step.step_s
    costs = stack_costs("vllm", "hopper")
    assert costs is not None and costs.step_op_us is None
    one = costs.model_copy(update={"step_op_us": Sourced(value=1.0, source="test")})
    six = costs.model_copy(update={"step_op_us": Sourced(value=6.0, source="test")})
    with overridden_costs({("vllm", "hopper"): one}):
        launches = estimate("hgx-h200", "deepseek-r1", dep).step.step_s - plain
        blackwell = estimate("hgx-b200", "deepseek-r1", dep).step.step_s
    with overridden_costs({("vllm", "hopper"): six}):
        assert estimate("hgx-h200", "deepseek-r1", dep).step.step_s - plain == pytest.approx(6 * launches, rel=1e-9)
    assert launches * 1e6 > 100  # hundreds of launches per DeepSeek-R1 step
    assert blackwell == estimate("hgx-b200", "deepseek-r1", dep).step.step_s


@pytest.fixture(scope="module")
def fits() -> dict:
    return fit_pairs(load_corpora(list(FIT_CORPORA)))


def test_a_stack_held_out_whole_takes_the_other_engines_law_on_its_family(fits: dict) -> None:
    """TensorRT-LLM held out: its Blackwell entry is priced with the per-op law of the other engines' kept
    rows on Blackwell, its default entry with theirs on every family; both say so and count as unfitted."""
    held = {r.id for r, _ in fits[("trtllm", "default")]}
    r = hr.refit(fits, held)
    for family in ("blackwell", "default"):
        rows = [(x, b) for (s, f), pairs in sorted(fits.items()) if f == family and s != "trtllm" for x, b in pairs]
        fit = fit_per_op(rows)
        costs = r.overrides[("trtllm", family)]
        assert costs.step_overhead_us.value == 0.0
        assert costs.step_op_us is not None and costs.step_op_us.value == pytest.approx(fit.op_us, rel=1e-12)
        assert costs.request_overhead_ms.value == pytest.approx(fit.request_overhead_ms, rel=1e-12)
        assert costs.step_op_us.source.startswith("borrowed: the other engines' law per op of the step")
        with overridden_costs(r.overrides):
            assert host_times_basis("trtllm", family) == "unfitted"
    assert any(
        n.startswith("trtllm/blackwell: no fit rows left; falls back to the other engines' law") for n in r.notes
    )
    assert "on blackwell" in r.overrides[("trtllm", "blackwell")].step_op_us.source  # type: ignore[union-attr]


def test_a_family_held_out_keeps_the_engines_own_pooled_time(fits: dict) -> None:
    """A stack that keeps rows on another family falls back to its own pooled default (no per-op law)."""
    held = {r.id for r, _ in fits[("vllm", "blackwell")]}
    r = hr.refit(fits, held)
    costs = r.overrides[("vllm", "blackwell")]
    assert costs.step_op_us is None
    assert costs.step_overhead_us.value == r.overrides[("vllm", "default")].step_overhead_us.value > 0


def test_rows_whose_gap_a_cost_per_op_takes_are_not_host_time_rows() -> None:
    """SGLang on CDNA (its own fitted cost per op) and SGLang on Ascend (the stack's fitted graph cost) fit
    that constant, not the engine's host times; every other fit row's family keeps its host-time rows."""
    assert gap_taken_elsewhere("sglang", "cdna") and gap_taken_elsewhere("sglang-ascend", "ascend")
    assert not gap_taken_elsewhere("sglang", "hopper") and not gap_taken_elsewhere("vllm", "hopper")
    keys = set(fit_rows(load_corpora(list(FIT_CORPORA))))
    assert ("sglang", "cdna") not in keys
    assert {("sglang", "hopper"), ("vllm", "hopper"), ("trtllm", "blackwell")} <= keys


def test_with_no_engine_left_anywhere_the_host_times_are_zero_and_say_so(fits: dict) -> None:
    """Held out with every fit row (the 1K ISL band, the 1-8 concurrency band), no engine has rows left: each
    fitted entry falls to no host time, and its note says why."""
    held = {r.id for (_, f), pairs in fits.items() if f == "default" for r, _ in pairs}
    r = hr.refit(fits, held)
    for (stack, family), costs in r.overrides.items():
        assert costs.step_overhead_us.value == 0.0 and costs.request_overhead_ms.value == 0.0, (stack, family)
        assert costs.step_op_us is not None and costs.step_op_us.value == 0.0
    assert r.notes and all(
        n.endswith("no engine's rows (none left anywhere) (0.00 µs per op launch, 0.0 ms/request)") for n in r.notes
    )
