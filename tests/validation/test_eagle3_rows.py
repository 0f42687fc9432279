"""The EAGLE-3 rows on GPUs (SpecForge's SpecBundle dashboard, Qwen3-235B-A22B on SGLang TP8, chains and token
trees): every row runs end to end through `validate` as the estimate prices it; a published accept length
sets the acceptance per draft token that accepts exactly that many tokens per step (property test of the
inversion); a row giving both, neither, or a length its draft chain cannot accept is refused in one line
naming the field."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.corpus import load_rows
from cloudmatrix.catalog.validation import load_yaml_rows
from cloudmatrix.deploy import acceptance_for_length, mtp_tokens_per_step
from cloudmatrix.errors import ConfigError
from cloudmatrix.studies.validate_run import row_acceptance, run_row


def test_every_row_runs_and_drafts_with_an_eagle3_head_where_it_speculates() -> None:
    rows = load_rows("eagle3-sglang")
    assert {r.speculation for r in rows if r.mtp} == {"eagle3"} and any(r.mtp == 0 for r in rows)
    assert {r.draft_topk for r in rows} == {1, 3, 4}  # chains and token trees
    for row in rows:
        outcome = run_row(row)
        assert outcome.status == "ok" and set(outcome.predicted) == set(row.measured), (row.id, outcome.reason)
        if row.mtp:
            assert row.accept_length is not None and row.mtp_acceptance is None
            assert mtp_tokens_per_step(row.mtp, row_acceptance(row)) == pytest.approx(row.accept_length)


def test_drafting_pays_where_the_dashboard_says_it_does() -> None:
    """At batch 8 the twin, like the measurement, gains from every chain it drafts over the plain step, and
    each tree loses to the chain of its depth (it accepts fewer tokens for as many verified)."""
    rows = [r for r in load_rows("eagle3-sglang") if "throughput_per_chip_tok_s" in r.measured]
    by_id = {r.id: run_row(r).predicted["throughput_per_chip_tok_s"] for r in rows}
    for bench in ("mtbench", "math500"):
        base = by_id[f"e3s-q235-{bench}-base"]
        assert all(by_id[f"e3s-q235-{bench}-s{k}"] > base for k in (3, 5, 7))
        assert by_id[f"e3s-q235-{bench}-s5k3"] < by_id[f"e3s-q235-{bench}-s5"]
        assert by_id[f"e3s-q235-{bench}-s7k4"] < by_id[f"e3s-q235-{bench}-s7"]


def test_the_b200_anchor_is_the_verify_pass_without_drafts() -> None:
    """The B200 rows run Qwen3-235B-A22B the way the EAGLE-3 rows' verify pass does, without speculation."""
    rows = [r for r in load_rows("eagle3-sglang") if r.system == "hgx-b200"]
    assert len(rows) == 3 and all(r.mtp == 0 and r.measured.keys() == {"tpot_ms"} for r in rows)
    tpot = [run_row(r).predicted["tpot_ms"] for r in sorted(rows, key=lambda r: r.workload.batch_per_chip or 0)]
    assert tpot == sorted(tpot)  # a larger batch takes a longer step


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.floats(0, 1))
def test_the_accept_length_inverts_the_chain(mtp: int, acceptance: float) -> None:
    length = mtp_tokens_per_step(mtp, acceptance)
    assert mtp_tokens_per_step(mtp, acceptance_for_length(mtp, length)) == pytest.approx(length, abs=1e-9)


def _row(**fields: Any) -> dict[str, Any]:
    row = next(r for r in load_rows("eagle3-sglang") if r.mtp).model_dump(exclude_defaults=True)
    row.pop("role", None)
    return row | {"id": "row-under-test"} | fields


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mtp_acceptance": 0.6}, "give mtp_acceptance or accept_length, not both"),
        ({"accept_length": 4.5}, "accept_length: got 4.5; expected 1 to 1 + mtp = 4 tokens per step"),
        ({"accept_length": 0.5}, "accept_length: Input should be greater than or equal to 1 (got 0.5)"),
        ({"accept_length": None}, "rows with MTP need mtp_acceptance or accept_length"),
    ],
)
def test_a_row_with_a_wrong_acceptance_is_one_line(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    row = _row(**fields)
    if row.get("accept_length") is None:
        row.pop("accept_length")
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump({"id": "t", "title": "t", "rows": [row]}))
    with pytest.raises(ConfigError) as e:
        load_yaml_rows(path)
    assert "\n" not in str(e.value) and str(e.value).startswith("rows.yaml: row 'row-under-test' (rows.0): ")
    assert message in str(e.value)
