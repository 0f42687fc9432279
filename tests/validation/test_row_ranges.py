"""Validation rows are checked before anything runs on them: every number is a finite number in its range
(true/false are not numbers), a decode batch holds at least one sequence, TP and EP fit in the dies of the
chips the role names (never clamped), and every problem is one line naming the row, the field, the value
and what was expected. A row whose run fails anyway keeps a one-line reason."""

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.validation import (
    MAX_BATCH,
    MAX_CHIPS,
    MAX_RANKS,
    MAX_REQUESTS,
    MAX_STEP_TOKENS,
    MAX_TOKENS,
    RoleLayout,
    ValidationRow,
    load_yaml_rows,
)
from cloudmatrix.cli.app import app
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import InputError
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.studies import validate_run
from cloudmatrix.studies.validate_run import check_ranks, run_row, twin_layout

runner = CliRunner()
DECODE: dict[str, Any] = {
    "id": "row-under-test",
    "source": "s",
    "system": "hgx-h200",
    "model": "deepseek-r1",
    "stack": "vllm",
    "kind": "decode",
    "weights": "fp8",
    "activations": "fp8",
    "kv": "bf16",
    "decode": {"chips": 32, "ep": 32, "dp_attention": True},
    "eplb": "default",
    "workload": {"input_len": 2000, "output_len": 2000, "batch_per_chip": 256, "kv_len": 3000},
    "measured": {"throughput_per_chip_tok_s": 2180},
    "series": "t",
}
E2E: dict[str, Any] = {
    **{k: v for k, v in DECODE.items() if k not in ("decode", "workload", "measured")},
    "kind": "e2e",
    "stack": "sglang",
    "aggregated": {"chips": 8, "tp": 8, "ep": 8, "max_batch_per_chip": 4, "chunk_tokens_per_chip": 1024},
    "workload": {"input_len": 1024, "output_len": 64, "concurrency": 4, "num_requests": 8, "rate_per_s": 1.0},
    "measured": {"output_tok_s_per_chip": 100, "tpot_ms": 20},
}
# every number a row states, its bounds, and whether it is a whole number
FIELDS: dict[str, tuple[dict[str, Any], float, float, bool]] = {
    "decode.instances": (DECODE, 1, MAX_CHIPS, True),
    "decode.chips": (DECODE, 1, MAX_CHIPS, True),
    "decode.tp": (DECODE, 1, MAX_RANKS, True),
    "decode.ep": (DECODE, 1, MAX_RANKS, True),
    "decode.dp": (DECODE, 1, MAX_RANKS, True),
    "decode.memory_fraction": (DECODE, math.ulp(0.0), 1 - 2**-53, False),
    "aggregated.max_batch_per_chip": (E2E, 1, MAX_BATCH, True),
    "aggregated.max_running": (E2E, 1, MAX_BATCH, True),
    "aggregated.chunk_tokens_per_chip": (E2E, 1, MAX_STEP_TOKENS, False),
    "workload.input_len": (DECODE, 1, MAX_TOKENS, True),
    "workload.output_len": (DECODE, 1, MAX_TOKENS, True),
    "workload.kv_len": (DECODE, 1, 2 * MAX_TOKENS, True),
    "workload.batch_per_chip": (DECODE, 1 / 32, MAX_BATCH, False),
    "workload.concurrency": (E2E, 1, MAX_REQUESTS // 10, True),
    "workload.num_requests": (E2E, 1, MAX_REQUESTS, True),
    "workload.rate_per_s": (E2E, math.ulp(0.0), MAX_REQUESTS, False),
    "workload.range_ratio": (E2E, math.ulp(0.0), 1, False),
    "mtp": (DECODE, 0, 8, True),
    "mtp_acceptance": (DECODE, 0, 1, False),
    "mtp_spread": (E2E, 0, 0.5, False),
    "measured.throughput_per_chip_tok_s": (DECODE, math.ulp(0.0), math.inf, False),  # finite: no other top
}


def _with(base: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    row = copy.deepcopy(base)
    *parents, last = field.split(".")
    node = row
    for p in parents:
        node = node[p]
    node[last] = value
    if field == "mtp":
        row["mtp_acceptance"] = 0.7
    return row


def _load(tmp_path: Path, row: dict[str, Any]) -> list[ValidationRow]:
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump({"id": "t", "title": "t", "rows": [row]}))
    return load_yaml_rows(path)


def _bad_values(lo: float, hi: float, whole: bool) -> st.SearchStrategy[Any]:
    below = st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False)
    above = st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False)
    out = [st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]), below]
    if math.isfinite(hi):
        out.append(above)
    if whole:
        out += [st.integers(min_value=int(hi) + 1, max_value=10**30), st.integers(max_value=int(lo) - 1)]
        out.append(st.floats(min_value=lo, max_value=min(hi, 1e6)).filter(lambda x: not x.is_integer()))
    return st.one_of(out)


@st.composite
def bad_rows(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any]]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    base, lo, hi, whole = FIELDS[field]
    value = draw(_bad_values(lo, hi, whole))
    return field, value, _with(base, field, value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_rows())
def test_a_number_out_of_its_range_is_one_line_naming_row_field_and_value(
    tmp_path: Path, case: tuple[str, Any, dict[str, Any]]
) -> None:
    field, value, row = case
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, row)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"rows.yaml: row 'row-under-test' (rows.0): {field}: "), msg
    assert "got" in msg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_number_inside_its_range_loads(tmp_path: Path, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(FIELDS)))
    base, lo, hi, whole = FIELDS[field]
    if whole:
        value: Any = data.draw(st.integers(min_value=int(lo), max_value=int(hi)))
    else:
        value = data.draw(st.floats(min_value=lo, max_value=hi, allow_infinity=False))
    (row,) = _load(tmp_path, _with(base, field, value))
    assert isinstance(row, ValidationRow)


def test_booleans_and_words_are_not_numbers(tmp_path: Path) -> None:
    for field, value in (("decode.chips", True), ("workload.batch_per_chip", True), ("decode.tp", "eight")):
        with pytest.raises(ConfigError, match=f"{field}: expected a number"):
            _load(tmp_path, _with(DECODE, field, value))
    with pytest.raises(ConfigError, match="decode.dp_attention: Input should be a valid boolean"):
        _load(tmp_path, _with(DECODE, "decode.dp_attention", 1))
    # YAML 1.1 reads 1e9 as text: still the number it spells, so the bound names it
    with pytest.raises(ConfigError, match=r"decode.ep: Input should be less than or equal to 1000000"):
        _load(tmp_path, _with(DECODE, "decode.ep", "1e9"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chips=st.integers(min_value=1, max_value=64), per_chip=st.floats(min_value=1e-300, max_value=2.0))
def test_a_decode_batch_holds_at_least_one_sequence(tmp_path: Path, chips: int, per_chip: float) -> None:
    row = _with(_with(DECODE, "decode.chips", chips), "workload.batch_per_chip", per_chip)
    row["decode"]["ep"] = chips
    if per_chip * chips >= 1:
        assert _load(tmp_path, row)[0].workload.batch_per_chip == per_chip
    else:
        with pytest.raises(ConfigError, match=r"workload.batch_per_chip: got .*; expected at least one sequence"):
            _load(tmp_path, row)


def _row(system: str, chips: int, tp: int, ep: int, dpa: bool) -> ValidationRow:
    layout = {"chips": chips, "tp": tp, "ep": ep, "dp_attention": dpa}
    return ValidationRow.model_validate({**DECODE, "system": system, "decode": layout})


@settings(max_examples=200, deadline=None)
@given(
    system=st.sampled_from(["hgx-h200", "cloudmatrix384", "mi300x"]),
    chips=st.integers(min_value=1, max_value=64),
    tp=st.integers(min_value=1, max_value=256),
    ep=st.integers(min_value=1, max_value=256),
    dpa=st.booleans(),
)
def test_ranks_fit_the_roles_dies_or_the_row_is_refused(system: str, chips: int, tp: int, ep: int, dpa: bool) -> None:
    """More TP or EP ranks than the role's dies is refused in one line (whatever DP attention says); a
    layout that fits runs with TP x DP and EP x expert TP equal to the role's dies."""
    row = _row(system, chips, tp, ep, dpa)
    assert row.decode is not None
    dies = chips * load_hardware(system).chip.num_dies
    if tp > dies or ep > dies:
        with pytest.raises(InputError) as e:
            check_ranks(row, row.decode, "decode")
        field = "tp" if tp > dies else "ep"
        got = tp if tp > dies else ep
        assert str(e.value) == (
            f"decode.{field}: got {got}; expected at most the {dies} dies of {chips} {system} chips"
        )
        return
    notes: list[str] = []
    twin = twin_layout(row, row.decode, load_model("deepseek-r1"), notes, "decode")
    assert dies % twin["tp"] == 0 and twin["ep"] * twin["moe_tp"] == dies
    assert twin["ep"] == ep or any(f"EP{ep} does not tile" in n for n in notes)


def test_a_row_over_the_systems_chips_is_refused_by_name() -> None:
    outcome = run_row(_row("hgx-h200", 1000, 1, 1, True))
    assert outcome.reason == "decode.chips: got 1000; expected at most the 256 chips of hgx-h200"


def test_the_issues_rows_are_refused_or_answered_honestly(tmp_path: Path) -> None:
    path = tmp_path / "rows.yaml"
    rows = [
        {**_with(E2E, "aggregated.tp", 64), "id": "tp64-ep64"} | {"aggregated": E2E["aggregated"] | {"tp": 64}},
        {**_with(DECODE, "decode.ep", 1000), "id": "ep1000-on-32"},
    ]
    path.write_text(yaml.safe_dump({"id": "t", "title": "t", "rows": rows}))
    res = runner.invoke(app, ["validate", str(path), "--json", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    reasons = {e["id"]: e["reason"] for e in json.loads(res.stdout)["rows"]}
    assert reasons["tp64-ep64"] == "aggregated.tp: got 64; expected at most the 8 dies of 8 hgx-h200 chips"
    assert reasons["ep1000-on-32"] == "decode.ep: got 1000; expected at most the 32 dies of 32 hgx-h200 chips"
    bad = runner.invoke(app, ["validate", str(_write(tmp_path, _with(DECODE, "workload.batch_per_chip", 1e-300)))])
    assert bad.exit_code == 2 and bad.stderr.strip().count("\n") == 0
    assert "row 'row-under-test' (rows.0): workload.batch_per_chip: got 1e-300" in bad.stderr


def _write(tmp_path: Path, row: dict[str, Any]) -> Path:
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"id": "t", "title": "t", "rows": [row]}))
    return path


def test_a_failing_run_keeps_a_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    row = ValidationRow.model_validate(E2E)

    def scenario_error(*_: Any) -> Any:
        return Scenario.model_validate({"aggregated": {"instances": 1, "chips": 8, "batch_per_chip": 10**9}})

    monkeypatch.setattr(validate_run, "scenario_for", scenario_error)
    reason = run_row(row).reason
    assert reason.startswith("scenario aggregated.batch_per_chip: Input should be less than or equal to 100000")
    assert "\n" not in reason

    def fault(*_: Any) -> Any:
        raise RuntimeError("first line\n  second line")

    monkeypatch.setattr(validate_run, "scenario_for", fault)
    assert run_row(row).reason == "internal error: RuntimeError: first line second line"


def test_a_chunk_below_the_simulations_smallest_is_noted() -> None:
    row = ValidationRow.model_validate(_with(E2E, "aggregated.chunk_tokens_per_chip", 4))
    notes: list[str] = []
    scenario = validate_run.scenario_for(row, load_model("deepseek-r1"), notes)
    assert scenario.aggregated is not None and scenario.aggregated.chunk_tokens_per_chip == 16
    assert notes == ["aggregated: a chunk of 4 tokens per chip runs as 16 (the simulation's smallest)"]


def test_layouts_built_in_code_are_checked_too() -> None:
    """The CSV adapter builds layouts itself: the same bounds hold."""
    with pytest.raises(ValueError, match="less than or equal to 1000000"):
        RoleLayout(chips=8, tp=99999999999999999999)
    with pytest.raises(ValueError, match="expected a number"):
        RoleLayout(chips=True)
