from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.overrides import (
    OVERRIDE_SOURCE,
    WHAT_IF_SUFFIX,
    apply_assignment,
    apply_hardware_overrides,
    parse_value,
)
from cloudmatrix.deploy import Deployment, Eplb, Phase
from cloudmatrix.errors import CloudMatrixError, ConfigError
from cloudmatrix.estimate import estimate


def _sourced(node: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(dotted path, value) of every Sourced leaf in a dumped Hardware."""
    if isinstance(node, dict):
        if "value" in node and "source" in node:
            yield path, node["value"]
            return
        for k, v in node.items():
            yield from _sourced(v, f"{path}.{k}" if path else k)


def test_apply_assignment_creates_sections_and_parses_yaml() -> None:
    data: dict[str, Any] = {"decode": {"batch_per_chip": 96}}
    apply_assignment(data, "decode.batch_per_chip=64", "decode.batch_per_chip=64")
    apply_assignment(data, "workload.arrivals={kind: closed, concurrency: 8}", "x=1")
    assert data == {"decode": {"batch_per_chip": 64}, "workload": {"arrivals": {"kind": "closed", "concurrency": 8}}}
    with pytest.raises(ConfigError, match=r"--set 'requests': expected key=value, e\.g\. decode\.batch_per_chip=64"):
        apply_assignment(data, "requests", "decode.batch_per_chip=64")
    with pytest.raises(ConfigError, match="'batch_per_chip' is not a section"):
        apply_assignment(data, "decode.batch_per_chip.x=1", "a=1")


def test_multiply_and_replace() -> None:
    hw = load_hardware("cloudmatrix384")
    new = apply_hardware_overrides(
        hw, ["system.planes.scale_up.bw_gb_s_per_die=x2", "chip.die.hbm_gb=192", "chip.launch_us=*1.5"]
    )
    ub = new.system.planes.scale_up.bw_gb_s_per_die
    assert ub.value == 2 * 196 and ub.assumed
    assert ub.source == OVERRIDE_SOURCE + "system.planes.scale_up.bw_gb_s_per_die=x2"
    assert new.chip.die.hbm_gb.value == 192 and new.chip.die.hbm_gb.source.endswith("chip.die.hbm_gb=192")
    assert new.system.id == "cloudmatrix384" + WHAT_IF_SUFFIX and "what-if" in new.system.name
    assert new.chip.id == new.system.chip == "ascend-910c" + WHAT_IF_SUFFIX
    assert new.totals()["hbm_tb"] == pytest.approx(3 * hw.totals()["hbm_tb"])
    # untouched values keep their provenance
    assert new.chip.die.hbm_bw_gb_s == hw.chip.die.hbm_bw_gb_s


def test_nested_sourced_and_open_mappings() -> None:
    hw = load_hardware("cloudmatrix384")
    new = apply_hardware_overrides(hw, ["chip.die.peak_tflops.int8=x1.5", "chip.die.peak_tflops.fp8=900"])
    assert new.chip.die.peak_tflops["int8"].value == pytest.approx(1.5 * 752)
    assert new.chip.die.peak_flops("fp8") == pytest.approx(900e12)  # a 910C with FP8 units
    assert new.chip.die.peak_tflops["bf16"] == hw.chip.die.peak_tflops["bf16"]
    eff = apply_hardware_overrides(hw, ["chip.efficiency.gemm_serving=0.5", "chip.microbatch.attention.compute=12"])
    assert eff.chip.efficiency.gemm_serving.value == 0.5 and eff.chip.microbatch.attention is not None
    assert eff.chip.microbatch.attention.compute == 12
    assert eff.system.id == "cloudmatrix384" + WHAT_IF_SUFFIX  # a chip-only change still marks the system


def test_original_and_cache_unchanged() -> None:
    hw = load_hardware("cloudmatrix384")
    before = hw.model_dump()
    new = apply_hardware_overrides(hw, ["system.planes.scale_up.bw_gb_s_per_die=x2", "chip.die.hbm_gb=192"])
    assert new is not hw
    assert hw.model_dump() == before and load_hardware("cloudmatrix384").model_dump() == before
    assert apply_hardware_overrides(hw, []) is hw
    again = apply_hardware_overrides(new, ["chip.die.hbm_gb=x1"])
    assert again.system.id == "cloudmatrix384" + WHAT_IF_SUFFIX  # the suffix is not stacked
    with pytest.raises(Exception, match="frozen"):
        new.chip.die.hbm_gb.value = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("chip.hbm_gb=192", r"unknown key 'hbm_gb' under 'chip'; valid keys: id, name, family, dies_per_chip, die"),
        (
            "system.planes.scale_upp.latency_us=1",
            r"unknown key 'scale_upp' under 'system.planes'; valid keys: scale_up",
        ),
        ("gpu.die.hbm_gb=1", r"unknown key 'gpu' under '<hardware>'; valid keys: system, chip"),
        ("chip.die.peak_tflops.fp8=x2", r"unknown key 'fp8' under 'chip.die.peak_tflops'; valid keys: bf16, int8"),
        ("chip.die.hbm_gb.value=3", r"'chip.die.hbm_gb' is a value, not a section"),
        ("chip.die.hbm_gb", r"expected key=value"),
    ],
)
def test_unknown_path_names_path_and_valid_keys(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        apply_hardware_overrides(load_hardware("cloudmatrix384"), [assignment])
    assert assignment in str(info.value)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("chip.die.hbm_gb=abc", r"'chip.die.hbm_gb' expects a positive number, got 'abc'"),
        ("chip.die.hbm_gb=-1", r"'chip.die.hbm_gb' expects a positive number, got '-1'"),
        ("system.planes.scale_up.bw_gb_s_per_die=xfast", r"expects a positive number, got 'xfast'"),
        # bandwidths, rates, capacities and counts are divided by: 0 is refused, not a ZeroDivisionError later
        ("chip.die.hbm_bw_gb_s=0", r"'chip.die.hbm_bw_gb_s' expects a positive number, got '0'"),
        ("system.planes.scale_out.bw_gb_s_per_die=0", r"expects a positive number, got '0'"),
        ("system.chips_per_node=0", r"'system.chips_per_node' expects a positive number"),
        ("chip.die.peak_tflops.int8=x0", r"'chip.die.peak_tflops.int8' expects a positive number, got 'x0'"),
        ("chip.microbatch.attention.compute=0", r"expects a positive number, got '0'"),
        ("chip.launch_us=-1", r"'chip.launch_us' expects a non-negative number, got '-1'"),
        ("system.name=x2", r"cannot multiply 'system.name'"),
        (
            "chip.microbatch.attention.compute=x1.1",
            r"chip.microbatch.attention.compute: Input should be a valid integer",
        ),
        (
            "chip.microbatch.decode_overlap=zip",
            r"chip.microbatch.decode_overlap: Input should be 'split' or 'alternate'",
        ),
        ("chip.die.hbm_gb=[", r"not valid YAML"),
        ("chip.efficiency.attention_overlap=1.5", r"attention_overlap is a share of the shorter term: 0 to 1, got 1.5"),
        ("chip.efficiency.attention_overlap=-0.1", r"expects a non-negative number, got '-0.1'"),
    ],
)
def test_bad_value_names_field_and_value(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_hardware_overrides(load_hardware("cloudmatrix384"), [assignment])


def test_fixed_overheads_may_be_zero() -> None:
    hw = apply_hardware_overrides(
        load_hardware("cloudmatrix384"), ["chip.launch_us=0", "system.planes.scale_out.latency_us=0"]
    )
    assert hw.chip.launch_us.value == 0 and hw.system.planes.scale_out.latency_us.value == 0
    hidden = apply_hardware_overrides(load_hardware("cloudmatrix384"), ["chip.efficiency.attention_overlap=0"])
    assert hidden.chip.efficiency.attention_overlap is not None


@pytest.mark.parametrize("system", sorted(system_ids()))
def test_every_fixed_time_in_microseconds_may_be_zero(system: str) -> None:
    """Every ``*_us`` number of a system (latencies, launches, graph start-ups and per-task costs) is a fixed
    time added, never divided by: a what-if may set it to 0 (a free launch or graph node), and the paper's
    deployments still price to a finite step; a negative one is refused naming it."""
    hw = load_hardware(system)
    times = [path for path, _ in _sourced(hw.model_dump()) if path.endswith("_us")]
    assert times
    for path in times:
        zero = apply_hardware_overrides(hw, [f"{path}=0"])
        assert dict(_sourced(zero.model_dump()))[path] == 0
        with pytest.raises(ConfigError, match=rf"'{path}' expects a non-negative number, got '-1'"):
            apply_hardware_overrides(hw, [f"{path}=-1"])
    if system == "cloudmatrix384":
        zero = apply_hardware_overrides(hw, [f"{path}=0" for path in times])
        for phase in (Phase.DECODE, Phase.PREFILL):
            assert 0 < estimate(zero, "deepseek-r1", _paper(phase)).step.step_s < float("inf")


def test_unset_optional_section_is_reported() -> None:
    with pytest.raises(ConfigError, match="'system.switches' is not set on this system"):
        apply_hardware_overrides(load_hardware("gb200-nvl72"), ["system.switches.l1_per_node=2"])


_SYSTEMS = sorted(system_ids())


@settings(max_examples=40, deadline=None)
@given(system=st.sampled_from(_SYSTEMS), pick=st.integers(min_value=0, max_value=10_000))
def test_times_one_leaves_every_value_equal(system: str, pick: int) -> None:
    hw = load_hardware(system)
    paths = list(_sourced(hw.model_dump()))
    path, _ = paths[pick % len(paths)]
    new = apply_hardware_overrides(hw, [f"{path}=x1"])
    assert list(_sourced(new.model_dump())) == paths
    assert new.totals() == hw.totals()


def _paper(phase: Phase) -> Deployment:
    if phase == Phase.DECODE:
        return Deployment(
            phase=Phase.DECODE, num_chips=160, ep=320, batch_per_chip=96, mtp=1, mtp_acceptance=0.7, eplb=Eplb.DEFAULT
        )
    return Deployment(phase=Phase.PREFILL, num_chips=16, ep=32, tokens_per_chip=16384, input_len=4096)


def test_doubling_ub_bandwidth_is_never_slower() -> None:
    hw = load_hardware("cloudmatrix384")
    fast = apply_hardware_overrides(hw, ["system.planes.scale_up.bw_gb_s_per_die=x2"])
    for phase in (Phase.DECODE, Phase.PREFILL):
        base = estimate(hw, "deepseek-r1", _paper(phase))
        what_if = estimate(fast, "deepseek-r1", _paper(phase))
        assert what_if.step.step_s <= base.step.step_s * (1 + 1e-12), phase
        assert what_if.to_dict()["system"] == "cloudmatrix384" + WHAT_IF_SUFFIX


@pytest.mark.parametrize("system", _SYSTEMS)
def test_an_identity_what_if_on_the_chip_prices_every_step_the_same(system: str) -> None:
    """A chip what-if renames the chip (``+what-if``) but keeps what was measured on it: ``x1`` on any chip
    number leaves every estimate the same to the bit, its kernel curves (GEMM and fused attention) included."""
    hw = load_hardware(system)
    same = apply_hardware_overrides(hw, ["chip.launch_us=x1"])
    assert same.chip.id.endswith("+what-if") and same.chip.curves_chip == hw.chip.curves_chip
    stack = {"ascend": "sglang-ascend"}.get(hw.chip.family)  # the stack that names the attention curve
    compared = 0
    for phase in (Phase.PREFILL, Phase.DECODE):
        d = Deployment(phase=phase, num_chips=8, tp=8, batch_per_chip=4, input_len=4096, precision="bf16", stack=stack)
        try:
            want = estimate(hw, "qwen3-32b", d).step.step_s
        except CloudMatrixError:
            continue  # a format, layout or size this system does not run: nothing to compare
        assert estimate(same, "qwen3-32b", d).step.step_s == want, (system, phase)
        compared += 1
    assert compared or hw.system.num_chips < 8, system


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(min_value=0, max_value=10**20).map(str), st.text("0123456789_+-xo. ", max_size=22)))
def test_a_plain_number_reads_as_yaml_reads_it(raw: str) -> None:
    """The integer shortcut (no PyYAML import) gives what YAML gives, for digits and anything near them."""
    import yaml

    try:
        expected = yaml.safe_load(raw)
    except yaml.YAMLError:
        return
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        got = parse_value(raw, f"x={raw}")
        assert (got, type(got)) == (expected, type(expected)) or (expected != expected and got != got)
