"""`cloudmatrix estimate` loads only what it needs: a test of imports (not of time). A heavy module that
sneaks back onto the estimate path fails here; benchmarks/startup.py measures the CPU it costs."""

import json
import subprocess
import sys

import pytest

# Never on the path of a bare `estimate --json`: numerics, plotting, the web stack, the simulator, Rich's
# tables (JSON prints none), click (only on a failure), the studies that are not the interval lookup, and
# PyYAML once the catalog's files are in the parsed-document cache (catalog/yaml_cache.py), and the modules of
# the other commands (each is imported only when run). Once the catalog's objects are in the object cache
# (catalog/object_cache.py) they are records (catalog/record.py): pydantic, the schemas that validate records
# and the pydantic configs are not imported, nor is what only writes a cache entry (tempfile, the pickle
# module) or hashlib's OpenSSL.
HEAVY = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "cloudmatrix.catalog.record_schema",
    "cloudmatrix.catalog.strict",
    "cloudmatrix.catalog.hf_schema",
    "tempfile",
    "pickle",
    "hashlib",
    "numpy",
    "yaml",
    "scipy",
    "matplotlib",
    "plotly",
    "simpy",
    "fastapi",
    "starlette",
    "uvicorn",
    "ray",
    "tokenizers",
    "prometheus_client",
    "rich",
    "click",
    "cloudmatrix.cost.experts",
    "cloudmatrix.studies.reproduce",
    "cloudmatrix.studies.ablate",
    "cloudmatrix.studies.scoring",
    "cloudmatrix.studies.holdout_score",
    "cloudmatrix.catalog.validation",
    "cloudmatrix.catalog.corpus",
    "cloudmatrix.catalog.inferencemax",
    "cloudmatrix.sim",
    "cloudmatrix.emulator",
    "cloudmatrix.report",
    "cloudmatrix.planner",
    *(f"cloudmatrix.cli.{name}_cmd" for name in ("simulate", "compare", "plan", "validate", "serve", "report")),
)

PROBE = """
import io, json, sys, contextlib
from cloudmatrix.cli.app import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["estimate", "--json"])
json.dump({"code": code, "modules": sorted(sys.modules), "out": out.getvalue()}, sys.stderr)
"""


def _estimate_modules() -> dict:
    """The second run's modules: the first fills the parsed-catalog cache (the test session's own folder)."""
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    return json.loads(run.stderr)


def test_bare_estimate_imports_no_heavy_module() -> None:
    probe = _estimate_modules()
    assert probe["code"] == 0
    assert json.loads(probe["out"])["throughput_per_chip_tok_s"] > 0
    loaded = [m for m in probe["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []


def test_bare_estimate_reads_two_hardware_files() -> None:
    """The system's and its chip's YAML, found by id: not every file of the catalog."""
    code = """
import io, contextlib, sys
from cloudmatrix.catalog import hardware
seen = []
real = hardware._hardware_file.__wrapped__
hardware._hardware_file = lambda path: seen.append(path.name) or real(path)
from cloudmatrix.cli.app import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["estimate", "--json"])
print(sorted(set(seen)))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['ascend-910c.yaml', 'cloudmatrix384.yaml']"


def test_options_are_parsed_without_pydantic_adapters() -> None:
    """Typer 0.29 makes a pydantic TypeAdapter for every option of the command run (7 % of a bare estimate's
    instructions); pyproject.toml pins the releases before it, which parse options themselves."""
    import typer

    if tuple(int(p) for p in typer.__version__.split(".")[:2]) >= (0, 29):
        pytest.skip(f"Typer {typer.__version__} installed; pyproject.toml pins typer>=0.26,<0.29")
    assert "typer._adapters" not in _estimate_modules()["modules"]
