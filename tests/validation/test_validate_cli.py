"""`cloudmatrix validate` end to end: the JSON contract, byte-identical reruns, the parity PNG, filters and
one-line errors. Runs on a few cheap rows of the public CSV, copied to a file of its own."""

import csv
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.validation import VALIDATION_DIR
from cloudmatrix.cli.app import app
from cloudmatrix.studies.scoring import error_stats

runner = CliRunner()
ROW_KEYS = {
    "id",
    "source",
    "system",
    "model",
    "stack",
    "role",
    "metric",
    "measured",
    "predicted",
    "error_pct",
    "status",
    "reason",
    "interval_lo",
    "interval_hi",
}


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with (VALIDATION_DIR / "inferencemax-public.csv").open() as f:
        records = [r for r in csv.DictReader(f) if r["osl"] == "1024" and int(r["conc"]) <= 8]
    picked = [r for r in records if r["hw"] == "h100"][:2] + [r for r in records if r["hw"] == "b200-trt"][:1]
    path = tmp_path_factory.mktemp("corpus") / "few.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(picked[0]))
        w.writeheader()
        w.writerows(picked)
    return path


def _run(args: list[str]) -> dict:
    res = runner.invoke(app, ["validate", *args, "--json", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_json_contract_and_rerun(small_csv: Path) -> None:
    first, second = _run([str(small_csv)]), _run([str(small_csv)])
    assert len(first["rows"]) == 3 * 5  # one entry per row and measured metric
    assert all(set(e) >= ROW_KEYS for e in first["rows"])
    assert {e["status"] for e in first["rows"]} == {"ok"}
    for e in first["rows"]:
        assert e["error_pct"] == pytest.approx((e["predicted"] - e["measured"]) / e["measured"] * 100, abs=0.01)
    first.pop("wall_time_s"), second.pop("wall_time_s")
    assert json.dumps(first) == json.dumps(second)  # byte-identical apart from the wall time
    cells = first["summary"]["cells"]
    assert {c["grouping"] for c in cells} == {"all", "system", "stack", "system x stack", "band"}
    tpot = [e["error_pct"] for e in first["rows"] if e["metric"] == "tpot_ms" and e["role"] == "fitted"]
    cell = next(c for c in cells if c["grouping"] == "all" and c["metric"] == "tpot_ms" and c["role"] == "fitted")
    assert (
        cell == {"role": "fitted", "grouping": "all", "key": "all", "metric": "tpot_ms"} | error_stats(tpot).to_dict()
    )


def test_refused_rows_count_as_misses() -> None:
    stats = error_stats([10.0, None, -30.0, None])
    assert (stats.rows, stats.answered, stats.answered_share) == (4, 2, 0.5)
    assert stats.median_abs_error_pct == 20.0 and stats.bias_pct == -10.0
    assert stats.within_15_pct == 25.0 and stats.within_25_pct == 25.0


def test_tables_and_parity_png(small_csv: Path, tmp_path: Path) -> None:
    png = tmp_path / "parity.png"
    res = runner.invoke(app, ["validate", str(small_csv), "--plot", str(png), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    assert "median |error|" in res.stdout and "hgx-h100 x vllm" in res.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_filters_select_rows(small_csv: Path) -> None:
    d = _run([str(small_csv), "--system", "hgx-h100"])
    assert {e["system"] for e in d["rows"]} == {"hgx-h100"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "guessed"], "role 'guessed' is not one of: fitted, predicted"),
        (["--system", "nowhere"], "no validation row matches"),
        (["--jobs", "0"], "--jobs: got 0; expected 1 to"),
        (["published", "--write-residuals"], "--write-residuals runs the whole shipped corpus"),
        (["missing.csv"], "corpus missing.csv: file not found"),
        (["--holdout", "planet"], "--holdout: 'planet' is not one of"),
        (["--holdout", "family", "--ray"], "--holdout runs in the process pool"),
    ],
)
def test_one_line_errors(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["validate", *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.ray
def test_ray_gives_the_in_process_answer(small_csv: Path) -> None:
    pytest.importorskip("ray")
    local = _run([str(small_csv)])
    jobs = str(min(2, os.cpu_count() or 1))
    res = runner.invoke(app, ["validate", str(small_csv), "--json", "--ray", "--jobs", jobs])
    assert res.exit_code == 0, res.output
    distributed = json.loads(res.stdout)
    local.pop("wall_time_s"), distributed.pop("wall_time_s")
    assert json.dumps(local) == json.dumps(distributed)
