"""The formats-2026 rows: W4A8 (int4 weights, int8 activations) on the 910C and EAGLE-3 draft heads run end
to end through `validate` as the estimate prices them; speculation is a steady-row field (an e2e row drafting
otherwise than with MTP layers is refused in one line)."""

import pytest

from cloudmatrix.catalog.corpus import load_rows
from cloudmatrix.catalog.validation import ValidationRow
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate
from cloudmatrix.studies.validate_run import run_row


def _rows() -> dict[str, ValidationRow]:
    return {r.id: r for r in load_rows("formats-2026")}


def test_every_row_runs_and_the_formats_are_the_ones_named() -> None:
    rows = _rows()
    assert {r.weights for r in rows.values()} >= {"int4"} and {r.speculation for r in rows.values()} >= {"eagle3"}
    for row in rows.values():
        outcome = run_row(row)
        assert outcome.status == "ok" and set(outcome.predicted) == set(row.measured), (row.id, outcome.reason)


def test_the_eagle3_row_is_the_estimate_of_its_deployment() -> None:
    row = _rows()["f26-q235-eagle3-a3-c1-11k1k"]
    d = Deployment(phase=Phase.DECODE, num_chips=8, tp=16, ep=1, moe_tp=16, batch_per_chip=0.125, input_len=11000,
                   output_len=1000, kv_len=11500, precision="int8", activation_precision="int8", mtp=4,
                   mtp_acceptance=0.6, speculation="eagle3", redundant_experts=0, stack="sglang-ascend")  # fmt: skip
    assert run_row(row).predicted["tpot_ms"] == pytest.approx(
        estimate("atlas-800t-a3", "qwen3-235b-a22b", d).tpot_s * 1e3
    )
    mtp_drafted = row.model_copy(update={"speculation": "ngram"})
    assert run_row(mtp_drafted).predicted["tpot_ms"] < run_row(row).predicted["tpot_ms"]  # the draft passes cost


def test_w4a8_is_what_fits_the_8_card_decode_instance() -> None:
    """Half the weight bytes: W8A8 DeepSeek-R1 on 16 dies does not fit (61 GB of weights per 64 GB die)."""
    row = _rows()["f26-r1-w4a8-a3-decode-3.5k1.5k"]
    assert run_row(row).status == "ok"
    w8a8 = run_row(row.model_copy(update={"weights": "int8"}))
    assert w8a8.status == "refused" and "does not fit: weights 61.0" in w8a8.reason


def test_an_e2e_row_drafting_without_mtp_layers_is_refused() -> None:
    base = next(r for r in load_rows("sglang-ascend") if r.kind == "e2e").model_dump()
    with pytest.raises(ValueError, match=r"speculation: got 'eagle3' \(draft_topk 1\); an e2e row is simulated"):
        ValidationRow.model_validate(base | {"speculation": "eagle3"})
