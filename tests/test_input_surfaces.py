"""Property-based tests of every input surface: the shared validation layer, deployment fields, CLI flags,
scenario files and ``--set`` values, traces and model configs. Every generated input ends in a clear
one-line refusal (exit 2, a ``CloudMatrixError``) or in a result whose every figure is finite; never a
traceback, an internal error or a NaN."""

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmatrix.cli.app import main
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import estimate
from cloudmatrix.inputs import MAX_DEPTH, InputError, check_number, finite_json, parse_yaml, read_text
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.workload.trace import read_trace

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e-300, 1e300, float("nan"), float("inf"), float("-inf")]),
)
anything = st.one_of(numbers, st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers(), max_size=3))


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return True


def _one_line(e: Exception) -> bool:
    return "\n" not in str(e) and len(str(e)) > 0


# ---- the shared layer ---------------------------------------------------------------------------------
@SETTINGS
@given(value=anything, lo=st.none() | st.floats(-10, 10), hi=st.none() | st.floats(10, 1e6), integer=st.booleans())
def test_check_number_accepts_exactly_the_finite_values_in_range(value, lo, hi, integer) -> None:
    try:
        check_number("x", value, lo=lo, hi=hi, integer=integer)
    except InputError as e:
        assert _one_line(e) and str(e).startswith("x: ")
        return
    assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    assert (lo is None or value >= lo) and (hi is None or value <= hi)
    assert not integer or float(value).is_integer()


@SETTINGS
@given(
    obj=st.recursive(
        numbers | st.text(max_size=3),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    )
)
def test_finite_json_is_always_strict_json(obj) -> None:
    json.dumps(finite_json(obj), allow_nan=False)


@SETTINGS
@given(levels=st.integers(1, 3000))
def test_deep_yaml_is_refused_not_crashed(levels: int) -> None:
    text = "[" * levels + "]" * levels
    if levels > MAX_DEPTH:  # refused by the depth check, or by libyaml itself beyond 1,000 flow levels
        with pytest.raises(InputError, match="nested more than|not valid YAML"):
            parse_yaml(text, "deep.yaml")
    else:
        parse_yaml(text, "deep.yaml")


@SETTINGS
@given(data=st.binary(max_size=64))
def test_files_that_are_not_utf8_text_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(InputError, match="not UTF-8"):
            read_text(path, "scenario")
    else:
        assert read_text(path, "scenario") == data.decode("utf-8")


def test_directories_devices_and_missing_files_are_named(tmp_path: Path) -> None:
    for path, message in (
        (tmp_path, "is a directory"),
        (Path("/dev/zero"), "not a regular file"),
        (tmp_path / "x", "file not found"),
    ):
        with pytest.raises(InputError, match=message):
            read_text(path, "trace")


# ---- deployments --------------------------------------------------------------------------------------
FIELDS = ("num_chips", "ep", "batch_per_chip", "input_len", "output_len", "kv_len", "mtp", "mtp_acceptance", "tp")


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=numbers)
def test_a_deployment_is_refused_or_priced_finite(field: str, value) -> None:
    base = dict(phase=Phase.DECODE, num_chips=16, batch_per_chip=8, input_len=1024, output_len=256)
    try:
        est = estimate("cloudmatrix384", "deepseek-r1", Deployment(**{**base, field: value}))
    except CloudMatrixError as e:
        assert _one_line(e)
        return
    d = est.to_dict()
    assert _finite(d) and est.tpot_s > 0 and est.throughput_per_chip_tok_s > 0


# ---- the CLI ------------------------------------------------------------------------------------------
FLAGS = ("--input-len", "--output-len", "--batch-per-chip", "--chips", "--ep", "--mtp", "--mtp-acceptance", "--tp")


@SETTINGS
@given(flag=st.sampled_from(FLAGS), value=st.one_of(numbers.map(str), st.text(max_size=8)))
def test_estimate_flags_end_in_a_result_or_one_line(capsys, flag: str, value: str) -> None:
    code = main(["estimate", "--batch-per-chip", "8", flag, value, "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 2), err
    if code == 0:
        assert _finite(json.loads(out))
    else:
        assert "Traceback" not in err and err.strip()


@SETTINGS
@given(
    key=st.sampled_from(
        [
            "requests",
            "seed",
            "duration_s",
            "workload.arrivals.rate_per_s",
            "decode.batch_per_chip",
            "workload.input.value",
            "slo.tpot_ms",
        ]
    ),
    value=st.one_of(numbers.map(str), st.text(max_size=8)),
)
def test_set_overrides_are_validated(key: str, value: str) -> None:
    try:
        load_scenario(None, [f"{key}={value}"])
    except CloudMatrixError as e:
        assert "Traceback" not in str(e)


# ---- traces and model configs -------------------------------------------------------------------------
@SETTINGS
@given(rows=st.lists(st.tuples(numbers, numbers, numbers), min_size=1, max_size=5))
def test_traces_are_refused_or_finite(tmp_path: Path, rows) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"timestamp": t, "input_length": i, "output_length": o}) for t, i, o in rows))
    try:
        trace = read_trace(path)
    except CloudMatrixError as e:
        assert _one_line(e)
        return
    for arr in (trace.timestamp_s, trace.input_len, trace.output_len):
        assert all(math.isfinite(float(x)) for x in arr)
    assert (trace.input_len >= 1).all() and (trace.output_len >= 1).all()


@SETTINGS
@given(
    field=st.sampled_from(
        ["hidden_size", "num_hidden_layers", "num_attention_heads", "n_routed_experts", "vocab_size"]
    ),
    value=anything,
)
def test_model_configs_are_refused_or_loaded(tmp_path: Path, field: str, value) -> None:
    from cloudmatrix.catalog.models import MODELS_DIR, load_model

    data = json.loads((MODELS_DIR / "deepseek-r1.json").read_text())
    data[field] = value
    path = tmp_path / f"cfg-{abs(hash((field, repr(value))))}.json"
    path.write_text(json.dumps(data, allow_nan=True))
    try:
        spec = load_model(str(path))
    except CloudMatrixError as e:
        assert _one_line(e)
        return
    assert spec.total_params() > 0


# ---- every numeric flag of every command --------------------------------------------------------------
def _numeric_flags() -> list[tuple[str, str]]:
    """(command, flag) for every int or float option, read from the CLI itself (new flags join the test)."""
    import typing

    import typer

    from cloudmatrix.cli.app import app

    found = []
    for name, command in typer.main.get_command(app).commands.items():
        hints = typing.get_type_hints(command.callback)
        for param in command.params:
            hint = hints.get(param.name)
            if {int, float} & ({hint} | set(typing.get_args(hint))):
                found.append((name, param.opts[0]))
    return found


NUMERIC_FLAGS = _numeric_flags()
never_valid = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-1e12", "", "0x", "1,5"]),
    st.text(alphabet=st.characters(categories=["L", "P", "S"]), min_size=1, max_size=6),
)


def test_the_flag_list_covers_every_command_with_numbers() -> None:
    commands = {c for c, _ in NUMERIC_FLAGS}
    assert {"estimate", "compare", "plan", "validate", "serve"} <= commands and len(NUMERIC_FLAGS) >= 30


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command_flag=st.sampled_from(NUMERIC_FLAGS), value=never_valid)
def test_every_numeric_flag_refuses_what_is_never_valid(capsys, command_flag: tuple[str, str], value: str) -> None:
    """Non-finite, non-numeric and hugely negative values end in exit 2 and one line on every command, before
    any work starts (plan, validate and serve included)."""
    command, flag = command_flag
    code = main([command, f"{flag}={value}"])
    _, err = capsys.readouterr()
    assert code == 2, (command, flag, value, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
