"""`cloudmatrix report` draws with plotly: matplotlib (the PNG plots of `validate --plot` and `compare
--sweep --plot`, about half a second of CPU to import) stays off its path. A test of imports, not of time;
benchmarks/startup.py measures what the report costs."""

import json
import subprocess
import sys

PROBE = """
import io, json, sys, contextlib
from cloudmatrix.cli.app import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["report", "--out", sys.argv[1], "--systems", "cloudmatrix384", "--json"])
with open(sys.argv[2], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules), "out": out.getvalue()}, f)
"""


def test_report_imports_no_matplotlib(tmp_path) -> None:
    probe_file = tmp_path / "probe.json"
    subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "r.html"), str(probe_file)], check=True)
    probe = json.loads(probe_file.read_text())
    assert probe["code"] == 0 and json.loads(probe["out"])["bytes"] > 0
    assert [m for m in probe["modules"] if m == "matplotlib" or m.startswith("matplotlib.")] == []
