"""Hostile inputs the other tests do not list: generated argument vectors for the commands (odd numbers,
huge integers, unicode, whitespace, NUL-free junk) run through ``main()`` in-process, and the file classes
behind them (JSON and YAML numbers Python will not parse, keys given twice, YAML tags JSON has no word
for, trace rows that are flags or fractions, requests no pool can hold). Every run ends in exit 0 with
strict, finite JSON, or exit 2 with one line on stderr: never a traceback, exit 3 or a hang."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.hf_schema import HFConfig
from cloudmatrix.catalog.models import MODELS_DIR, parse_config
from cloudmatrix.cli.app import main
from cloudmatrix.emulator.schemas import ChatBody, CompletionBody
from cloudmatrix.errors import CloudMatrixError, ConfigError, InfeasibleDeploymentError
from cloudmatrix.inputs import InputError, check_number, parse_json, parse_yaml, refuse_flag_as_number
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import SCENARIO_DIR, load_scenario
from cloudmatrix.workload.trace import read_trace
from tests.test_input_surfaces import _finite

ODD = [
    "", " ", "\u00e9\u2603", "1e308", str(10**30), "9" * 400, "9" * 5000, "-0", "-0.0", "0x10", "inf", "nan",
    "-inf", "1_000", "0", "-1", "1e-300", "1e400", "+5", " 4 ", "\u0663", "x" * 3000, "a\tb", "[1]", "{a: 1}",
    "true", "null", "~", "!!binary aGVsbG8=", "2001-12-14", "&a [*a]",
]  # fmt: skip
values = st.one_of(
    st.sampled_from(ODD),
    st.integers(min_value=-(10**320), max_value=10**320).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20),
)
ESTIMATE_FLAGS = [
    "--chips", "--ep", "--batch-per-chip", "--tokens-per-chip", "--input-len", "--output-len", "--kv-len",
    "--mtp", "--mtp-acceptance", "--cached-fraction", "--attention-tp", "--tp", "--moe-tp", "--redundant-experts",
    "--reserve-gb", "--offload-gb", "--chunk-tokens-per-chip", "--precision", "--phase", "--eplb", "--routing",
    "--stack", "--model", "--system",
]  # fmt: skip
COMPARE_FLAGS = ["--workload", "--tpot-slo", "--ttft-slo", "--mtp", "--mtp-acceptance", "--target-rate", "--systems"]
SET_PATHS = [
    "requests", "seed", "decode.chips", "decode.ep", "decode.batch_per_chip", "decode.mtp", "prefill.instances",
    "prefill.tokens_per_chip", "workload.input.value", "workload.arrivals.rate_per_s", "slo.ttft_ms", "nonexistent",
    "decode.0", "workload", "", "decode.", ".decode",
]  # fmt: skip
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"{name} in JSON output")


def _assert_clean_run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    elif "--json" in argv:
        assert _finite(json.loads(out, parse_constant=_refuse_constant)), argv


@SETTINGS
@given(flag=st.sampled_from(ESTIMATE_FLAGS), value=values)
def test_estimate_flags_end_in_json_or_one_line(capsys, flag: str, value: str) -> None:
    _assert_clean_run(capsys, ["estimate", flag, value, "--json"])


@SETTINGS
@given(flag=st.sampled_from(COMPARE_FLAGS), value=values)
def test_compare_flags_end_in_json_or_one_line(capsys, flag: str, value: str) -> None:
    _assert_clean_run(capsys, ["compare", flag, value, "--systems", "cloudmatrix384", "--json"])


@SETTINGS
@given(path=st.sampled_from(SET_PATHS), value=values)
def test_set_values_end_in_json_or_one_line(capsys, path: str, value: str) -> None:
    _assert_clean_run(capsys, ["simulate", "--set", "requests=40", "--set", f"{path}={value}", "--json"])


@pytest.mark.parametrize(
    "argv",
    [
        ["estimate", "--json"],
        ["compare", "--systems", "cloudmatrix384", "--json"],
        ["simulate", "--set", "requests=40", "--json"],
        ["estimate", "--routing", "zipf:1@c=30", "--json"],
        ["compare", "--workload", "4096/256", "--systems", "cloudmatrix384", "--json"],
    ],
)
def test_the_generated_runs_start_from_runs_that_succeed(capsys, argv: list[str]) -> None:
    """The generators above vary one part of these: each must run as given, so that a renamed flag cannot
    turn the generated runs into usage errors that pass for refusals."""
    assert main(argv) == 0, capsys.readouterr().err
    assert _finite(json.loads(capsys.readouterr().out, parse_constant=_refuse_constant))


@pytest.mark.parametrize("top", ["21", "1000", "9" * 400])
def test_plan_bounds_its_simulation_checks_before_searching(capsys, top: str) -> None:
    assert main(["plan", "--top", top, "--json"]) == 2
    assert "--top" in capsys.readouterr().err


# ---- the classes behind the findings -----------------------------------------------------------------
@pytest.mark.parametrize(
    "value", [10**300 + 1, 10**400, -(10**5000), 10**4300], ids=["1e300+1", "1e400", "-1e5000", "1e4300"]
)
@pytest.mark.parametrize("bounds", [{}, {"lo": 0}, {"hi": 10}, {"lo": 1, "hi": 100, "integer": True}])
def test_integers_past_float_are_refused_not_overflowed(value: int, bounds: dict) -> None:
    with pytest.raises(InputError, match="an integer (above|below) "):
        check_number("x", value, **bounds)


@pytest.mark.parametrize("parse", [parse_json, parse_yaml])
@pytest.mark.parametrize("text", ["9" * 4301, '{"a": ' + "1" * 6000 + "}", "[1, -" + "2" * 5000 + "]"])
def test_numbers_python_will_not_parse_are_one_line(parse, text: str) -> None:
    with pytest.raises(InputError, match="4,300 digits"):
        parse(text, "f")


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_json, '{"a": 1, "a": 2}'),
        (parse_json, '{"x": [{"b": 1, "b": 1}]}'),
        (parse_yaml, "a: 1\na: 2\n"),
        (parse_yaml, "x:\n  - {b: 1, b: 2}\n"),
        (parse_yaml, "d: &d {k: 1, k: 2}\ne: *d\n"),
    ],
)
def test_a_key_given_twice_is_refused(parse, text: str) -> None:
    with pytest.raises(InputError, match="given twice"):
        parse(text, "f")


@pytest.mark.parametrize(
    "text", ["a: !!binary aGVsbG8=", "a: !!set {x}", "a: 2001-12-14", "a: 2001-12-14 21:59:43", "a: !!omap [b: 1]"]
)
def test_yaml_values_json_has_no_word_for_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="expected text, a number"):
        parse_yaml(text, "f")


def test_merge_keys_and_shared_anchors_still_load() -> None:
    assert parse_yaml("b: &x {a: 1}\nc:\n  <<: *x\n  a: 2\nd: *x\n", "f") == {
        "b": {"a": 1},
        "c": {"a": 2},
        "d": {"a": 1},
    }


ROW = '{"timestamp": %s, "input_length": %s, "output_length": %s}'
BAD_ROWS = {
    "a flag as a length": ROW % (0, "true", 5),
    "a fraction of a token": ROW % (0, 1.9, 5),
    "a key twice": '{"timestamp": 0, "input_length": 1, "input_length": 9, "output_length": 1}',
    "an integer Python will not parse": ROW % (0, "9" * 5000, 5),
    "nested past the bound": "[" * 5000 + "]" * 5000,
    "a flag as a hash id": '{"timestamp": 0, "input_length": 9, "output_length": 1, "hash_ids": [true]}',
}


@pytest.mark.parametrize("name", BAD_ROWS)
def test_trace_rows_are_refused_with_their_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(ROW % (0, 10, 5) + "\n" + BAD_ROWS[name] + "\n")
    with pytest.raises(CloudMatrixError, match="t.jsonl line 2") as e:
        read_trace(path)
    assert "\n" not in str(e.value)


def test_a_trace_may_start_with_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\ufeff" + ROW % (0, 10, 5) + "\n")
    assert read_trace(path).input_len.tolist() == [10]


@pytest.mark.parametrize("prompt", [600_000, 999_999])
def test_requests_no_pool_can_hold_are_refused_not_stalled(tmp_path: Path, prompt: int) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(ROW % (0, prompt, 1) + "\n" + ROW % (1, 100, 1) + "\n")
    scenario = load_scenario(None, ["requests=10", f"workload.trace={path}"])
    with pytest.raises(InfeasibleDeploymentError, match=f"1 of 2 requests can never be served.*{prompt:,} prompt"):
        simulate(scenario)


def test_a_trace_that_fits_still_runs(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(ROW % (i, 100, 4) + "\n" for i in range(5)))
    result = simulate(load_scenario(None, ["requests=5", f"workload.trace={path}"]))
    assert int(np.sum(result.table.generated)) >= 5 * 4


# ---- true/false is no number (pydantic's lax mode reads them as 1 and 0) ------------------------------
NOT_BOOL = [name for name, f in HFConfig.model_fields.items() if f.annotation is not bool]


@pytest.mark.parametrize("field", NOT_BOOL)
def test_a_model_config_takes_no_boolean_for_a_number(field: str) -> None:
    data = _r1_config()
    data[field] = True
    with pytest.raises(ConfigError, match=f"{field}: .*not true/false"):
        parse_config("m", data)


def _r1_config() -> dict:
    return json.loads((MODELS_DIR / "deepseek-r1.json").read_text())


@pytest.mark.parametrize(
    "path",
    ["requests", "seed", "decode.chips", "decode.mtp", "prefill.instances", "workload.input.value", "slo.ttft_ms"],
)
@pytest.mark.parametrize("flag", ["true", "false"])
def test_a_scenario_takes_no_boolean_for_a_number(path: str, flag: str) -> None:
    with pytest.raises(ConfigError, match=f"{path.split('.')[-1]}: .*not true/false"):
        load_scenario(None, [f"{path}={flag}"])


@pytest.mark.parametrize("body", [ChatBody, CompletionBody])
@pytest.mark.parametrize("field", ["max_tokens", "n"])
def test_an_api_body_takes_no_boolean_for_a_number(body, field: str) -> None:
    with pytest.raises(ValueError, match="not true/false"):
        body.model_validate({"model": "m", "messages": [], "prompt": "p", field: True})


@pytest.mark.parametrize("annotation", [bool, bool | None, int | bool, object])
def test_fields_that_take_booleans_still_do(annotation) -> None:
    assert refuse_flag_as_number(Any if annotation is object else annotation, True) is True


# ---- an output never replaces an input of the same run, nor another output ------------------------------
def _scenario(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text((SCENARIO_DIR / "cm384-paper.yaml").read_text().replace("requests: 20000", "requests: 20"))
    return path


@pytest.mark.parametrize("flag", ["--requests-csv", "--timeline-csv"])
@pytest.mark.parametrize("via", ["itself", "a symlink", "another spelling"])
def test_an_output_never_replaces_the_runs_input(tmp_path: Path, capsys, flag: str, via: str) -> None:
    scenario = _scenario(tmp_path)
    before = scenario.read_bytes()
    target = {
        "itself": str(scenario),
        "a symlink": str(tmp_path / "link.csv"),
        "another spelling": f"{tmp_path}/./s.yaml",
    }[via]
    if via == "a symlink":
        (tmp_path / "link.csv").symlink_to(scenario)
    assert main(["simulate", str(scenario), flag, target]) == 2
    err = capsys.readouterr().err
    assert "read as input" in err and err.count("\n") == 1
    assert scenario.read_bytes() == before


def test_a_report_never_replaces_the_validate_run_it_reads(tmp_path: Path, capsys) -> None:
    run = tmp_path / "v.json"
    run.write_text('{"rows": []}')
    code = main(["report", "--systems", "cloudmatrix384", "--validate-json", str(run), "--out", str(run)])
    assert code == 2 and run.read_text() == '{"rows": []}'
    capsys.readouterr()


def test_two_outputs_of_one_run_need_two_files(tmp_path: Path, capsys) -> None:
    target = tmp_path / "out.csv"
    code = main(
        ["simulate", str(_scenario(tmp_path)), "--requests-csv", str(target), "--timeline-csv", f"{tmp_path}/./out.csv"]
    )
    assert code == 2 and "both name" in capsys.readouterr().err and not target.exists()


def test_outputs_elsewhere_are_written(tmp_path: Path, capsys) -> None:
    scenario = _scenario(tmp_path)
    args = ["--requests-csv", str(tmp_path / "r.csv"), "--timeline-csv", str(tmp_path / "t.csv")]
    assert main(["simulate", str(scenario), *args]) == 0
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 21  # a header and 20 requests
    capsys.readouterr()


# ---- serve: an address it cannot listen on is one line before anything starts ---------------------------
@pytest.mark.parametrize("host", ["", " ", "\u00e9\u2603", "-1", "x" * 300, "localhost:80", "0.5", "192.0.2.1"])
def test_serve_refuses_an_address_it_cannot_listen_on(capsys, host: str) -> None:
    assert main(["serve", "--host", host, "--api-key", "k"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --host") and err.count("\n") == 1


def test_serve_refuses_a_port_in_use(capsys) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--api-key", "k"]) == 2
    assert "in use" in capsys.readouterr().err


# ---- strings that carry numbers: routing specs and workload lengths ------------------------------------
numbers_as_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.sampled_from(["\u00b2", "\u0663", "1_0", "0x10", "", " 5", "1e308", "-0", "9" * 5000]),
)


@SETTINGS
@given(
    exponent=numbers_as_text, concentration=st.none() | numbers_as_text, phase=st.sampled_from(["decode", "prefill"])
)
def test_routing_specs_end_in_json_or_one_line(capsys, exponent: str, concentration: str | None, phase: str) -> None:
    spec = f"zipf:{exponent}" + ("" if concentration is None else f"@c={concentration}")
    _assert_clean_run(capsys, ["estimate", "--routing", spec, "--phase", phase, "--json"])


@SETTINGS
@given(inp=numbers_as_text, out=numbers_as_text)
def test_workload_lengths_end_in_json_or_one_line(capsys, inp: str, out: str) -> None:
    _assert_clean_run(capsys, ["compare", "--workload", f"{inp}/{out}", "--systems", "cloudmatrix384", "--json"])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_no_catalog_value_is_nan_or_infinite(value: float) -> None:
    from pydantic import ValidationError

    from cloudmatrix.catalog.sourced import Sourced

    with pytest.raises(ValidationError, match="finite"):
        Sourced(value=value, source="user")


# ---- a saved validate run read back by `report` ----------------------------------------------------------
SAVED_ROW = {
    "id": "r", "source": "s", "system": "cloudmatrix384", "model": "deepseek-r1", "stack": "cloudmatrix-infer",
    "role": "predicted", "metric": "throughput_per_chip_tok_s", "measured": 1000.0, "predicted": 900.0,
    "error_pct": -10.0, "status": "ok", "reason": "", "series": "s", "family": "ascend", "band": "steady",
    "concurrency": None, "mtp": 0, "note": "",
}  # fmt: skip


@pytest.mark.parametrize("field", ["system", "measured", "predicted", "error_pct", "role", "metric", "concurrency"])
@pytest.mark.parametrize("value", [[], {}, "x", True, -1, 0, None, float("nan")])
def test_report_refuses_a_saved_row_by_field(tmp_path: Path, capsys, field: str, value: object) -> None:
    from cloudmatrix.studies.saved_run import SavedRow

    row = SAVED_ROW | {field: value}
    try:
        SavedRow.model_validate(row)
    except ValueError:
        path = tmp_path / "v.json"
        path.write_text(json.dumps({"rows": [row], "summary": {"cells": []}}))
        argv = [
            "report",
            "--systems",
            "cloudmatrix384",
            "--validate-json",
            str(path),
            "--out",
            str(tmp_path / "r.html"),
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"rows[0].{field}" in err and err.count("\n") == 1


@pytest.mark.parametrize("summary", [None, [], {"cells": None}, {"cells": "x"}, {"cells": [1]}, {"cells": [{}]}])
def test_report_refuses_a_saved_summary_it_cannot_read(tmp_path: Path, capsys, summary: object) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"rows": [SAVED_ROW], "summary": summary}))
    argv = ["report", "--systems", "cloudmatrix384", "--validate-json", str(path), "--out", str(tmp_path / "r.html")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --validate-json") and err.count("\n") == 1
