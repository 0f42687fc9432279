"""The host-time law an engine with no fit rows of its own is priced with out of group: the other engines'
cost per op launch of the step (least squares through zero) and their request time; it adds cost x launches to
a step, and a stack held out whole takes it from the other engines' rows on the same chip family."""

from dataclasses import dataclass, field

import pytest

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.hardware import load_chip, load_hardware
from cloudmatrix.catalog.host_basis import host_times_basis
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import (
    load_stack,
    overridden_costs,
    request_fixed_s,
    stack_costs,
    stack_ids,
)
from cloudmatrix.cost.pricing import host_op_us
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
    steps_at_launch,
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


def test_a_stack_held_out_whole_takes_its_prior_plus_the_other_engines_excess(fits: dict) -> None:
    """TensorRT-LLM held out: its Blackwell entry is priced with its own prior kernels per op plus what the other
    engines' kept rows on Blackwell pay per op beyond their own priors (its default entry: theirs on every
    family), and with its own prior request time; both say so and count as unfitted."""
    held = {r.id for r, _ in fits[("trtllm", "default")]}
    r = hr.refit(fits, held)
    counted = {"sglang": 2.1, "vllm": 0.9}  # the engines' counted priors (stacks.yaml op_kernels)
    for family in ("blackwell", "default"):
        rows = [(x, b) for (s, f), pairs in sorted(fits.items()) if f == family and s != "trtllm" for x, b in pairs]
        excess = fit_per_op(rows, per_kernel=True, counted=counted).op_us
        costs = r.overrides[("trtllm", family)]
        assert costs.step_overhead_us.value == 0.0 and costs.step_op_us is None
        assert costs.step_kernels is not None and costs.step_kernels.value == pytest.approx(0.35 + excess, rel=1e-12)
        assert 0.0 < excess < 2.0  # the engines pay about one kernel node per op beyond their listed counts
        assert costs.request_overhead_ms.value == 13.5  # the front end's own prior, not the other engines' fit
        assert costs.step_kernels.source.startswith("borrowed: the engine's prior, 0.35 kernels per op")
        with overridden_costs(r.overrides):
            assert host_times_basis("trtllm", family) == "unfitted"
    assert any(n.startswith("trtllm/blackwell: no fit rows left; falls back to the engine's prior") for n in r.notes)
    assert "(16 fit rows on blackwell)" in r.overrides[("trtllm", "blackwell")].step_kernels.source  # type: ignore[union-attr]
    # on one family the law per kernel is the law per op launch: every row's chip has the same cost per kernel
    same = [(x, b) for (s, f), pairs in sorted(fits.items()) if f == "blackwell" and s != "trtllm" for x, b in pairs]
    assert fit_per_op(same, per_kernel=True).op_us * 1.8 == pytest.approx(fit_per_op(same).op_us, rel=1e-12)


def test_each_engine_held_out_takes_its_own_prior_plus_the_others_excess(fits: dict) -> None:
    """For every engine held out whole, on every family it has rows on: kernels per op = its prior + the
    excess the other engines' rows on that family pay over their own priors, request time = its own prior. The
    excess is one number per family whichever engine is held out only in the rows it sees: an engine's own
    count never enters its own price beyond its prior."""
    for stack in ("sglang", "vllm", "trtllm"):
        held = {r.id for r, _ in fits[(stack, "default")]}
        r = hr.refit(fits, held)
        prior, request = load_stack(stack).op_kernels, load_stack(stack).request_ms
        assert prior is not None and request is not None
        for (s, family), costs in r.overrides.items():
            if s != stack:
                continue
            rows = [(x, b) for (t, f), ps in sorted(fits.items()) if f == family and t != stack for x, b in ps]
            counted = {t: load_stack(t).op_kernels.value for t in {x.stack for x, _ in rows}}  # type: ignore[union-attr]
            excess = fit_per_op(rows, per_kernel=True, counted=counted).op_us
            assert costs.step_kernels is not None
            assert costs.step_kernels.value == pytest.approx(prior.value + excess, rel=1e-12), (stack, family)
            assert costs.request_overhead_ms.value == request.value, (stack, family)


def test_fit_per_op_beyond_counted_priors_closed_form() -> None:
    """Each row's engine's prior count is taken off its gap first: engine a (prior 1 kernel) with gaps of 3 µs
    per op, engine b (prior 2) with 4 µs per op: each pays 2 µs per op beyond its own count, the fit says 2
    exactly, and the request time is what is left with each step priced at (2 + own prior) per op. The excess
    is not clamped: priors above the rows' gaps give a negative one."""

    @dataclass
    class _Stacked(_Row):
        stack: str = ""

    def pair(i: int, stack: str, tpot_ms: float, ops: float) -> tuple[_Stacked, BaseTimes]:
        base = BaseTimes(tpot_ms=2.0, ttft_ms=10.0, ttft_steps=1.0, ops=ops)
        return _Stacked(id=f"r{i}", measured={"tpot_ms": tpot_ms, "ttft_ms": 30.0}, stack=stack), base

    pairs = [pair(0, "a", 2.3, 100.0), pair(1, "b", 3.2, 300.0)]
    fit = fit_per_op(pairs, counted={"a": 1.0, "b": 2.0})  # type: ignore[arg-type]
    assert fit.op_us == pytest.approx(2.0, abs=1e-12)
    # row 0: 30 - 10 - 1 x 3 x 100 / 1e3 = 19.7; row 1: 30 - 10 - 4 x 300 / 1e3 = 18.8
    assert fit.request_overhead_ms == pytest.approx(19.25, abs=1e-12)
    assert fit_per_op(pairs, counted={"a": 5.0, "b": 5.0}).op_us < 0  # type: ignore[arg-type]
    assert fit_per_op(pairs).op_us > 0  # type: ignore[arg-type]


def test_a_family_held_out_takes_the_engines_own_law_per_kernel_of_the_chip(fits: dict) -> None:
    """A stack that keeps rows on another family prices the held family with its own law fitted on them in
    kernels of each chip's cost per kernel node, so Blackwell held out pays Blackwell's cost per kernel (0.6
    times Hopper's), not the Hopper offset per step; it says so and counts as unfitted."""
    held = {r.id for r, _ in fits[("vllm", "blackwell")]}
    r = hr.refit(fits, held)
    costs = r.overrides[("vllm", "blackwell")]
    kept = [(x, b) for x, b in fits[("vllm", "default")] if x.id not in held]
    assert kept and {b.kernel_us for _, b in kept} == {3.0}  # the Hopper rows
    fit = fit_per_op(kept, per_kernel=True)
    assert costs.step_overhead_us.value == 0.0 and costs.step_op_us is None
    assert costs.step_kernels is not None and costs.step_kernels.value == pytest.approx(fit.op_us, rel=1e-12)
    assert costs.request_overhead_ms.value == pytest.approx(fit.request_overhead_ms, rel=1e-12)
    # closed form: the Hopper rows' µs per op over Hopper's 3.0 µs per kernel, times Blackwell's 1.8
    with overridden_costs(r.overrides):
        got = host_op_us(load_hardware("hgx-b200"), "vllm")
        assert host_times_basis("vllm", "blackwell") == "unfitted"
    assert got == pytest.approx(fit_per_op(kept).op_us * 1.8 / 3.0, rel=1e-12)
    assert 3.0 < got < 4.5  # the Blackwell rows' own fit asks 3.8 µs per op; Hopper's is 6.0
    assert any(n.startswith("vllm/blackwell: no fit rows left; falls back to the engine's own law") for n in r.notes)


def test_rows_whose_gap_a_cost_per_op_takes_are_not_host_time_rows() -> None:
    """SGLang on CDNA (its own fitted cost per op) and SGLang on Ascend (the stack's fitted graph cost) fit
    that constant, not the engine's host times; every other fit row's family keeps its host-time rows."""
    assert gap_taken_elsewhere("sglang", "cdna") and gap_taken_elsewhere("sglang-ascend", "ascend")
    assert not gap_taken_elsewhere("sglang", "hopper") and not gap_taken_elsewhere("vllm", "hopper")
    keys = set(fit_rows(load_corpora(list(FIT_CORPORA))))
    assert ("sglang", "cdna") not in keys
    assert {("sglang", "hopper"), ("vllm", "hopper"), ("trtllm", "blackwell")} <= keys


def test_with_no_engine_left_anywhere_each_takes_its_engine_prior(fits: dict) -> None:
    """Held out with every fit row (the 1K ISL band, the 1-8 concurrency band), no engine has rows left: each
    fitted entry takes its engine's priors (kernels per op from its source x the chip's cost per kernel node, and
    its host time per request), not zero host time; its note says so."""
    held = {r.id for (_, f), pairs in fits.items() if f == "default" for r, _ in pairs}
    r = hr.refit(fits, held)
    assert r.overrides
    for (stack, family), costs in r.overrides.items():
        prior, request = load_stack(stack).op_kernels, load_stack(stack).request_ms
        assert prior is not None and prior.assumed and prior.source, stack
        assert request is not None and request.assumed and request.source, stack
        assert costs.step_overhead_us.value == 0.0, (stack, family)
        assert costs.request_overhead_ms.value == request.value > 0, (stack, family)
        assert costs.request_overhead_ms.source == f"priors alone: the engine's prior ({request.source})"
        assert costs.step_kernels is not None and costs.step_kernels.value == prior.value > 0
        assert costs.step_kernels.source.startswith("priors alone: the engine's prior")
    assert all("the engine's prior" in n and n.endswith(" ms/request") for n in r.notes)
    # the basis the hold-out records: priors alone, also where an entry names a stack's priced entry (like:)
    with overridden_costs(r.overrides):
        for stack, family in [*r.overrides, ("sglang", "cdna"), ("atom", "cdna"), ("sglang-ascend", "ascend")]:
            assert host_times_basis(stack, family) == "prior", (stack, family)
        assert host_times_basis("dynamo-trtllm", "blackwell") == "prior"  # a front end's is its engine's
    # priced: SGLang's 2.1 kernels per op cost 2.1 x 3.0 µs on Hopper and 2.1 x 1.8 µs on Blackwell
    with overridden_costs(r.overrides):
        assert host_op_us(load_hardware("hgx-h200"), "sglang") == pytest.approx(6.3, abs=1e-12)
        assert host_op_us(load_hardware("hgx-b200"), "sglang") == pytest.approx(3.78, abs=1e-12)
        assert host_op_us(load_hardware("hgx-b200"), "dynamo-trtllm") == pytest.approx(0.63, abs=1e-12)


def test_a_step_with_no_fit_rows_left_is_not_the_device_model_alone(fits: dict) -> None:
    """A group that takes every fit row prices an SGLang step slower than the device alone by the prior's
    host time per op times the step's launches (2.1 kernels x 3.0 µs on H200, x 1.8 µs on B200)."""
    held = {r.id for (_, f), pairs in fits.items() if f == "default" for r, _ in pairs}
    r = hr.refit(fits, held)
    dep = Deployment(phase=Phase.DECODE, num_chips=8, tp=8, ep=1, moe_tp=8, batch_per_chip=1, input_len=1000,
                     output_len=1000, kv_len=1500, precision="fp8", activation_precision="fp8",
                     stack="sglang")  # fmt: skip
    for system, family, per_op in (("hgx-h200", "hopper", 6.3), ("hgx-b200", "blackwell", 3.78)):
        prior = r.overrides[("sglang", family)]
        none = prior.model_copy(update={"step_kernels": None})  # no host time at all: the device model alone
        with overridden_costs(r.overrides | {("sglang", family): none}):
            alone, bumped = steps_at_launch(load_hardware(system), load_model("deepseek-r1"), dep)
        with overridden_costs(r.overrides):
            priced = estimate(system, "deepseek-r1", dep).step.step_s
        assert (priced - alone) == pytest.approx(per_op * (bumped - alone), rel=1e-6)
        assert priced - alone > 1e-3  # over a millisecond per step: hundreds of launches


def test_the_cost_per_kernel_node_is_a_sourced_chip_attribute() -> None:
    """Every NVIDIA chip states its cost per captured kernel node with a source: Hopper 3.0 µs (assumed) and
    Blackwell 1.8 µs (the B300 measurement, carried to its siblings), the generation step the per-kernel law
    carries; SGLang, vLLM and TensorRT-LLM state their kernels per op (Dynamo front ends take their engine's)."""
    for chip in ("nvidia-h100", "nvidia-h200", "nvidia-h800", "nvidia-b200", "nvidia-gb200", "nvidia-b300"):
        task = load_chip(chip).graph_task_us
        assert task is not None and task.source
        assert task.value == (3.0 if load_chip(chip).family == "hopper" else 1.8)
    assert "B300-REF" in load_chip("nvidia-b300").graph_task_us.source  # type: ignore[union-attr]
    for stack, kernels in (("sglang", 2.1), ("vllm", 0.9), ("trtllm", 0.35), ("dynamo-sglang", 2.1)):
        prior = load_stack(stack).op_kernels
        assert prior is not None and prior.value == kernels and prior.source.startswith("assumed")


def test_every_engine_with_a_prior_per_op_states_a_sourced_request_time() -> None:
    """The request-time prior is catalog data with its sources: every stack that states (or inherits) kernels per
    op states a host time per request too, assumed, naming the published runs it was read from, so no hold-out
    group left without fit rows is priced with no request time. A front end takes its engine's."""
    for profile in map(load_stack, stack_ids()):
        if profile.op_kernels is None:
            continue
        request = profile.request_ms
        assert request is not None, profile.id
        assert request.assumed and "TTFT" in request.source and 5.0 < request.value < 60.0, profile.id
        if profile.base is not None:
            assert request == load_stack(profile.base).request_ms, profile.id
    expected = {"sglang": (19.4, "DeepSeek-OCR"), "vllm": (17.9, "ray-project/ray#59681"), "trtllm": (13.5, "RTX 5090")}
    for stack, (value, cited) in expected.items():
        request = load_stack(stack).request_ms
        assert request is not None and request.value == value and cited in request.source, stack


def test_a_group_with_no_fit_rows_prices_each_request_at_its_engine_prior(fits: dict) -> None:
    """Closed form: with every fit row held out, a request's fixed time on every fitted (stack, family) is the
    engine's prior, 19.4 ms for SGLang, 17.9 for vLLM, 13.5 for TensorRT-LLM (a Dynamo front end its engine's),
    where it was zero before; a group that keeps fit rows keeps its refitted request time."""
    held = {r.id for (_, f), pairs in fits.items() if f == "default" for r, _ in pairs}
    r = hr.refit(fits, held)
    with overridden_costs(r.overrides):
        for stack, family, ms in (("sglang", "hopper", 19.4), ("sglang", "blackwell", 19.4),
                                  ("vllm", "hopper", 17.9), ("trtllm", "blackwell", 13.5),
                                  ("dynamo-trtllm", "blackwell", 13.5)):  # fmt: skip
            assert request_fixed_s(stack, family, disaggregated=False) == pytest.approx(ms / 1e3, abs=1e-12)
    one_kept = held - {next(r.id for r, _ in fits[("vllm", "default")])}
    kept = hr.refit(fits, one_kept)
    assert not kept.overrides[("vllm", "default")].request_overhead_ms.source.startswith("borrowed")


def test_where_another_engine_states_no_prior_its_pooled_law_prices_the_held_engine() -> None:
    """The excess over the other engines' own counts needs each of their priors: where one of them states none
    (ATOM), the held-out engine takes their pooled law per op and their request time, and says so."""

    @dataclass
    class _Stacked(_Row):
        stack: str = ""

    base = BaseTimes(tpot_ms=2.0, ttft_ms=10.0, ttft_steps=1.0, ops=300.0, kernel_us=1.8)
    rows = [(_Stacked(id="a", measured={"tpot_ms": 3.08, "ttft_ms": 40.0}, stack="atom"), base)]
    entry = stack_costs("vllm", "blackwell")
    assert entry is not None and hr._counted({"atom", "sglang"}) is None
    costs, note = hr._per_op_fallback(entry, rows, "1 fit rows on blackwell", "vllm")  # type: ignore[arg-type]
    fit = fit_per_op(rows, per_kernel=True)  # type: ignore[arg-type]
    assert fit.op_us == pytest.approx(2.0, abs=1e-12)  # 1,080 µs over 300 ops x 1.8 µs
    assert costs.step_kernels is not None and costs.step_kernels.value == pytest.approx(fit.op_us, abs=1e-12)
    assert costs.request_overhead_ms.value == pytest.approx(fit.request_overhead_ms, abs=1e-12)
    assert note.startswith("the other engines' law per op of the step, 1 fit rows on blackwell")


def test_every_engine_prior_per_op_is_its_stated_kernel_count() -> None:
    """An engine's kernels per op (``op_kernels``) is counted from its source, not fitted: its source names the
    code and snapshot it was counted from, and the value is the count it states (kernels per op beyond the first,
    the arithmetic over the twin's ops of a step), so a prior edited without its count, or a count without its
    prior, fails."""
    stated = [p for p in map(load_stack, stack_ids()) if p.op_kernels_setting is not None]
    assert {p.id for p in stated} >= {"sglang", "vllm", "trtllm"}
    for profile in stated:
        prior = profile.op_kernels_setting
        assert prior is not None and prior.assumed, profile.id
        assert "counted from" in prior.source and "commit" in prior.source, profile.id
        assert f"{prior.value:g} beyond the first" in prior.source, profile.id
        assert "not profiled" in prior.source, profile.id  # what is assumed is said
