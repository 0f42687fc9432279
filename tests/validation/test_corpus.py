"""The validation corpus: the InferenceMAX adapter reads the CSV as shipped, the YAML rows load, and bad
files fail with one line naming the file, line and column."""

import csv
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.corpus import load_corpora, load_rows
from cloudmatrix.catalog.inferencemax import read_inferencemax
from cloudmatrix.catalog.validation import VALIDATION_DIR, shipped_corpora
from cloudmatrix.errors import CloudMatrixError, ConfigError

CSV = VALIDATION_DIR / "inferencemax-public.csv"


def _records() -> list[dict[str, str]]:
    with CSV.open() as f:
        return list(csv.DictReader(f))


def _write(path: Path, records: list[dict[str, str]], fields: list[str] | None = None) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def test_every_public_row_is_read() -> None:
    rows = load_rows("inferencemax-public")
    assert len(rows) == 207
    assert len({r.id for r in rows}) == 207
    assert {r.stack for r in rows} == {"sglang", "vllm", "trtllm", "dynamo-trtllm"}
    assert {r.system for r in rows} == {"hgx-h100", "hgx-h200", "hgx-b200", "gb200-nvl72"}
    assert all(
        set(r.measured) == {"output_tok_s_per_chip", "tok_s_per_chip", "tpot_ms", "ttft_ms", "p99_ttft_ms"}
        for r in rows
    )


def test_a_colocated_row_maps_exactly() -> None:
    row = next(
        r for r in load_rows("inferencemax-public") if r.id == "imx-b200-sglang-deepseek-r1-fp8-1024x1024-tp8-ep1-c4"
    )
    assert (row.system, row.model, row.stack, row.kind) == ("hgx-b200", "deepseek-r1", "sglang", "e2e")
    assert (row.weights, row.activations, row.kv) == ("fp8", "fp8", "bf16")  # SGLang FP8 keeps a BF16 KV cache
    a = row.aggregated
    assert a is not None and (a.chips, a.tp, a.ep, a.dp_attention) == (8, 8, 1, False)
    assert a.chunk_tokens_per_chip == 16384 / 8  # --chunked-prefill-size 16384 over one TP8 engine
    w = row.workload
    assert (w.input_len, w.output_len, w.range_ratio, w.concurrency, w.num_requests) == (1024, 1024, 0.8, 4, 40)
    assert row.measured["tpot_ms"] == 8.78 and row.measured["output_tok_s_per_chip"] == 55.6


def test_a_disaggregated_row_uses_gpu_counts() -> None:
    rows = load_rows("inferencemax-public")
    row = next(r for r in rows if "d2-tp2-ep2-dpa" in r.id)
    assert row.prefill is not None and row.decode is not None
    assert (row.prefill.instances, row.prefill.chips) == (1, 1)
    assert (row.decode.instances, row.decode.chips, row.decode.dp_attention) == (2, 2, True)
    assert row.kv == "fp8" and row.disaggregated


def test_formats_follow_the_chip_family() -> None:
    """MXFP4 gpt-oss experts run W4A16 on Hopper and with 8-bit activations on Blackwell (assumed, flagged)."""
    rows = load_rows("inferencemax-public")
    hopper = next(r for r in rows if r.system == "hgx-h100")
    blackwell = next(r for r in rows if r.system == "hgx-b200" and r.model == "gpt-oss-120b")
    assert (hopper.weights, hopper.activations) == ("mxfp4", "bf16")
    assert (blackwell.weights, blackwell.activations) == ("mxfp4", "fp8")
    assert "activations" in hopper.assumed


def test_shipped_corpora_load_with_unique_ids() -> None:
    assert shipped_corpora() == [
        "eagle3-sglang",
        "formats-2026",
        "inferencemax-more",
        "inferencemax-public",
        "published",
        "sglang-ascend",
    ]
    rows = load_corpora()
    assert len(rows) == len({r.id for r in rows}) > 207 + 67 + 6
    assert all(r.source and r.series for r in rows)


def test_any_csv_with_the_columns_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.csv", _records()[:3])
    rows = load_rows(str(path))
    assert len(rows) == 3 and all(r.role == "fitted" or r.role == "predicted" for r in rows)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    recs = _records()[:2]
    fields = [f for f in recs[0] if f not in ("conc", "median_tpot_ms")]
    path = _write(tmp_path / "short.csv", [{k: r[k] for k in fields} for r in recs], fields)
    with pytest.raises(ConfigError, match="missing columns: conc, median_tpot_ms"):
        read_inferencemax(path)


def test_bad_value_names_line_and_column(tmp_path: Path) -> None:
    recs = _records()[:3]
    recs[1]["median_ttft_ms"] = "fast"
    with pytest.raises(ConfigError, match=r"bad.csv line 3: column median_ttft_ms: expected a number, got 'fast'"):
        read_inferencemax(_write(tmp_path / "bad.csv", recs))


def test_unmapped_hardware_lists_the_known(tmp_path: Path) -> None:
    recs = _records()[:1]
    recs[0]["hw"] = "rtx6000pro-lat"
    with pytest.raises(ConfigError, match=r"column hw: 'rtx6000pro-lat' is not mapped \(known: h100, h200"):
        read_inferencemax(_write(tmp_path / "amd.csv", recs))


def test_missing_file_and_unknown_corpus() -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_rows("/nonexistent/points.csv")
    with pytest.raises(CloudMatrixError, match="unknown validation corpus"):
        load_rows("no-such-corpus")


FIELDS = ["conc", "isl", "osl", "gpus_total", "tput_per_gpu", "median_tpot_ms", "parallel", "precision", "disagg"]


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(FIELDS), value=st.one_of(st.text(max_size=12), st.floats(allow_nan=True), st.integers()))
def test_generated_cells_parse_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, field: str, value: object
) -> None:
    """Any value in any column either parses into a valid row or fails as a ConfigError, never otherwise."""
    recs = _records()[:1]
    recs[0][field] = str(value)
    path = _write(tmp_path_factory.mktemp("gen") / "gen.csv", recs)
    try:
        rows = read_inferencemax(path)
    except ConfigError as e:
        # the row starts on line 2; a NUL is named on the line it sits on, inside the row's quoted lines
        line = re.search(r"gen\.csv line (\d+)", str(e))
        text = str(value)
        assert line and 2 <= int(line[1]) <= 2 + text.count("\n") + text.count("\r") and "\n" not in str(e)
    else:
        assert len(rows) == 1 and rows[0].workload.concurrency >= 1
