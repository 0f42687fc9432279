"""A serving stack is priced only on the vendors it has builds for (``runs_on`` in stacks.yaml): estimate,
simulate and plan refuse any other with one line naming the stack, the system's vendor and where the stack
runs; compare marks such systems "not run" and prices the rest. The catalog's own pairs all run."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.presets import presets
from cloudmatrix.catalog.reference import load_reference, reference_ids
from cloudmatrix.catalog.stacks import load_stack, not_run_reason, stack_ids
from cloudmatrix.cli.app import app
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import ConfigError

runner = CliRunner()
SYSTEMS = sorted(system_ids())


def _vendor(system: str) -> str:
    return load_hardware(system).system.vendor


def test_every_stack_says_where_it_runs_with_a_source() -> None:
    for sid in stack_ids():
        runs_on = load_stack(sid).runs_on
        assert runs_on.vendors and runs_on.source, sid
    assert {v for s in stack_ids() for v in load_stack(s).runs_on.vendors} == {_vendor(s) for s in SYSTEMS}


def test_the_catalogs_own_pairs_all_run() -> None:
    """Presets, reference sets and validation rows only pair a stack with a vendor it runs on."""
    for system, preset in presets().items():
        assert not_run_reason(preset["stack"], _vendor(system), system) is None, system
    for ref_id in reference_ids():
        ref = load_reference(ref_id)
        for row in ref.rows:
            stack = row.stack or ref.stack
            system = row.setup.get("system", ref.defaults.get("system", ref.system))
            if stack:
                assert not_run_reason(stack, _vendor(system), system) is None, row.id
    for r in load_corpora():
        assert not_run_reason(r.stack, _vendor(r.system), r.system) is None, r.id


@pytest.mark.parametrize(("stack", "system"), list(itertools.product(stack_ids(), SYSTEMS)))
def test_a_deployment_is_refused_exactly_where_the_stack_has_no_build(stack: str, system: str) -> None:
    hw = load_hardware(system)
    d = Deployment(phase=Phase.DECODE, num_chips=1, batch_per_chip=1, precision="bf16", stack=stack)
    runs = hw.system.vendor in load_stack(stack).runs_on.vendors
    try:
        plan(d, hw, load_model("llama-3.1-405b"))
        refused = None
    except ConfigError as e:
        refused = str(e)
    if runs:
        assert refused is None or "does not run on" not in refused
    else:
        assert refused is not None and "\n" not in refused
        vendors = ", ".join(load_stack(stack).runs_on.vendors)
        assert refused.startswith(f"stack {stack} does not run on {hw.system.vendor} (system {system}); ")
        assert f"it runs on {vendors}" in refused


@pytest.mark.parametrize(
    ("args", "vendor"),
    [
        (["estimate", "--system", "cloudmatrix384", "--stack", "trtllm"], "huawei"),
        (["estimate", "--system", "cloudmatrix384", "--stack", "atom"], "huawei"),
        (["estimate", "--system", "hgx-h200", "--chips", "8", "--precision", "fp8", "--stack", "mindie"], "nvidia"),
        (["plan", "--system", "cloudmatrix384", "--stack", "trtllm", "--no-check"], "huawei"),
    ],
)
def test_commands_refuse_with_one_line_and_exit_2(args: list[str], vendor: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0
    assert f"does not run on {vendor}" in res.stderr and "it runs on" in res.stderr


def test_simulate_refuses_a_scenario_whose_stack_has_no_build(tmp_path: Path) -> None:
    scenario = {
        "system": "hgx-h200",
        "model": "deepseek-r1",
        "precision": "fp8",
        "stack": "mindie",
        "aggregated": {"instances": 1, "chips": 8, "batch_per_chip": 8},
        "requests": 10,
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario))
    res = runner.invoke(app, ["simulate", str(path)])
    assert res.exit_code == 2 and "stack mindie does not run on nvidia" in res.stderr


def test_compare_marks_systems_the_stack_does_not_run_on() -> None:
    systems = "cloudmatrix384,hgx-h200,mi300x"
    res = runner.invoke(app, ["compare", "--stack", "trtllm", "--systems", systems, "--workload", "1k-1k", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["system"]: r for r in json.loads(res.stdout)["systems"]}
    for system, vendor in (("cloudmatrix384", "huawei"), ("mi300x", "amd")):
        assert rows[system]["not_run"] and not rows[system]["feasible"]
        assert rows[system]["reason"].startswith(f"not run: stack trtllm does not run on {vendor}")
    assert not rows["hgx-h200"]["not_run"] and rows["hgx-h200"]["feasible"]
    table = runner.invoke(app, ["compare", "--stack", "trtllm", "--systems", systems, "--workload", "1k-1k"])
    assert table.exit_code == 0 and "not run" in table.stdout


def test_serve_refuses_before_listening() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--stack", "trtllm", "--port", "18797"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "error: stack trtllm does not run on huawei (system cloudmatrix384); it runs on nvidia; "
        "stacks that run on huawei: cloudmatrix-infer, mindie, sglang-ascend, vllm-ascend"
    )
