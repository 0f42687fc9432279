"""`cloudmatrix report`: one self-contained page (plotly's JavaScript inlined once, nothing fetched), its
--json contract, and its numbers: the same objects `compare --json`, `reproduce --json` and `validate
--json` print (the page embeds them as #report-data)."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.report.data import ERROR_GROUPINGS

runner = CliRunner()
SYSTEMS = "cloudmatrix384,gb200-nvl72,hgx-b200"


def _json(args: list[str]) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1).replace("<\\/", "</"))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[dict, str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    run = tmp / "validate.json"
    res = runner.invoke(app, ["validate", "src/cloudmatrix/catalog/data/validation/rows-published.yaml",
                              "--system", "gb200-nvl72", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    run.write_text(res.stdout)
    out = tmp / "r.html"
    summary = _json(["report", "--out", str(out), "--systems", SYSTEMS, "--validate-json", str(run), "--plan"])
    return summary, out.read_text(), run


def test_contract_and_a_self_contained_page(small) -> None:
    summary, page, _ = small
    assert summary["sections"] == ["verdict", "sweep", "compare", "tradeoff", "plan", "breakdown", "reproduce",
                                   "validation", "glance"]  # fmt: skip
    assert summary["bytes"] == len(page.encode()) < 10 * 1024 * 1024
    assert page.count("* plotly.js v") == 1  # the library once, not once per figure
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)="(?!data:)', page)  # nothing loaded from anywhere
    assert page.count('class="plotly-graph-div"') == 6
    for sid in summary["sections"]:
        assert f'<section id="{sid}">' in page


def test_numbers_are_the_commands_own(small) -> None:
    _, page, run = small
    data = embedded(page)
    assert data["compare"] == _json(["compare", "--systems", SYSTEMS])
    assert data["reproduce"] == _json(["reproduce"])
    saved = json.loads(run.read_text())
    cells = [c for c in saved["summary"]["cells"] if c["grouping"] in ERROR_GROUPINGS]
    assert data["validation"]["cells"] == cells
    assert [e["predicted"] for e in data["validation"]["entries"]] == [e["predicted"] for e in saved["rows"]]
    assert data["plan"]["ranked"] and data["plan"]["system"] == "cloudmatrix384"


def test_default_validation_uses_the_stored_residuals() -> None:
    from cloudmatrix.report.data import residual_entries, validation

    v = validation(None)
    entries = residual_entries()
    assert len(v["entries"]) == len(entries) > 100 and v["guard"]["predicted"]
    overall = next(c for c in v["cells"] if c["role"] == "predicted" and c["grouping"] == "all"
                   and c["metric"] == "output_tok_s_per_chip")  # fmt: skip
    assert 0 < overall["median_abs_error_pct"] < 15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--validate-json", "missing.json"], "file not found"),
        (["--tpot-slo", "nan"], "tpot_slo"),
        (["--systems", "dgx9"], "unknown system 'dgx9'"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, ["report", "--out", str(tmp_path / "r.html"), *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "r.html").exists()
