"""`validate` reads a benchmark's own result file (vllm bench serve or SGLang bench_serving JSON) as a
corpus row when a sidecar beside it names the system, model, stack, formats and layout; measured figures
come from the file, per chip over the sidecar's chips."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.corpus import load_rows
from cloudmatrix.cli.app import app

runner = CliRunner()
SIDECAR = """system: mi300x
model: deepseek-r1
stack: vllm
weights: fp8
activations: fp8
kv: fp8
aggregated: {chips: 8, tp: 8, ep: 1}
workload: {input_len: 1024, output_len: 1024, range_ratio: 0.8}
assumed: [experts tensor-parallel over the 8 GPUs]
"""
VLLM_RESULT = {
    "completed": 1280,
    "max_concurrency": 128,
    "request_rate": "inf",
    "output_throughput": 4274.4,
    "total_token_throughput": 8548.8,
    "median_ttft_ms": 350.0,
    "p99_ttft_ms": 900.0,
    "median_tpot_ms": 28.8,
}


def _files(tmp_path: Path, result: dict, sidecar: str | None = SIDECAR) -> Path:
    path = tmp_path / "mi300x-c128.json"
    path.write_text(json.dumps(result))
    if sidecar is not None:
        (tmp_path / "mi300x-c128.sidecar.yaml").write_text(sidecar)
    return path


def test_a_vllm_result_with_its_sidecar_is_a_row(tmp_path: Path) -> None:
    (row,) = load_rows(str(_files(tmp_path, VLLM_RESULT)))
    assert row.kind == "e2e" and row.id == "mi300x-c128" and row.system == "mi300x" and row.stack == "vllm"
    assert row.measured == {
        "ttft_ms": 350.0,
        "tpot_ms": 28.8,
        "output_tok_s_per_chip": pytest.approx(4274.4 / 8),
        "p99_ttft_ms": 900.0,
        "tok_s_per_chip": pytest.approx(8548.8 / 8),
    }
    assert row.workload.concurrency == 128 and row.workload.num_requests == 1280


@pytest.mark.parametrize(
    ("rate", "cap", "want"),
    [("inf", 128, (128, None)), (0.25, 32, (32, 0.25)), (0.25, None, (None, 0.25))],
)
def test_a_finite_rate_with_a_cap_is_both(tmp_path: Path, rate: object, cap: int | None, want: tuple) -> None:
    """--request-rate R --max-concurrency C: the rate, capped at C in flight; an infinite rate: C clients."""
    result = {**VLLM_RESULT, "request_rate": rate, "max_concurrency": cap}
    (row,) = load_rows(str(_files(tmp_path, result)))
    assert (row.workload.concurrency, row.workload.rate_per_s) == want


def test_an_sglang_line_reads_too(tmp_path: Path) -> None:
    sglang = {k: v for k, v in VLLM_RESULT.items() if k != "total_token_throughput"} | {"total_throughput": 8000.0}
    (row,) = load_rows(str(_files(tmp_path, sglang)))
    assert row.measured["tok_s_per_chip"] == pytest.approx(1000.0)


def test_the_twins_own_vllm_result_validates(tmp_path: Path) -> None:
    """A file `simulate --result-format vllm` wrote, with a sidecar, runs through `validate`."""
    out = tmp_path / "twin.json"
    sim = ["simulate", "--set", "requests=200", "--result-format", "vllm", "--out", str(out)]
    assert runner.invoke(app, sim).exit_code == 0
    sidecar = (
        "system: cloudmatrix384\nmodel: deepseek-r1\nstack: cloudmatrix-infer\nweights: int8\nactivations: int8\n"
        "kv: bf16\nprefill: {instances: 6, chips: 16, ep: 32}\ndecode: {chips: 160, ep: 320}\nmtp: 1\n"
        "mtp_acceptance: 0.7\neplb: default\nworkload: {input_len: 4096, output_len: 256, rate_per_s: 110}\n"
    )
    (tmp_path / "twin.sidecar.yaml").write_text(sidecar)
    res = runner.invoke(app, ["validate", str(out), "--json", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    entries = {e["metric"]: e for e in json.loads(res.stdout)["rows"]}
    assert {e["id"] for e in entries.values()} == {"twin"}
    assert set(entries) == {"ttft_ms", "p99_ttft_ms", "tpot_ms", "output_tok_s_per_chip", "tok_s_per_chip"}
    # the twin's own TPOT, read back from its vllm-format file and re-run from the sidecar's layout
    assert abs(entries["tpot_ms"]["error_pct"]) < 2


@pytest.mark.parametrize(
    ("result", "sidecar", "needle"),
    [
        (VLLM_RESULT, None, "no sidecar mi300x-c128.sidecar.yaml"),
        ({**VLLM_RESULT, "median_ttft_ms": None}, SIDECAR, "median_ttft_ms: expected a positive number"),
        ([1, 2], SIDECAR, "expected a benchmark result object"),
        (VLLM_RESULT, SIDECAR.replace("mi300x", "mi300x", 1).replace("kv: fp8", "kv: fp3"), "kv"),
        (VLLM_RESULT, "system: mi300x\n", "no prefill/decode or aggregated layout"),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, result: object, sidecar: str | None, needle: str) -> None:
    path = tmp_path / "mi300x-c128.json"
    path.write_text(json.dumps(result))
    if sidecar is not None:
        (tmp_path / "mi300x-c128.sidecar.yaml").write_text(sidecar)
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output
