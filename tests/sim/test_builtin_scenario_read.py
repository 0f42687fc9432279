"""A built-in scenario read through the shipped-YAML cache is the scenario its file parses to, and a run of one
with plain integer overrides imports no YAML parser."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cloudmatrix.inputs import read_yaml_file
from cloudmatrix.sim.scenario import SCENARIO_DIR, builtin_names, load_scenario, scenario_from


@pytest.mark.parametrize("name", builtin_names())
def test_a_builtin_scenario_is_what_its_file_parses_to(name: str) -> None:
    path = SCENARIO_DIR / f"{name}.yaml"
    data = read_yaml_file(path, "scenario")
    data.setdefault("base_dir", str(path.parent.resolve()))
    overrides = ["requests=1200", "seed=3"]
    assert load_scenario(name, overrides) == scenario_from(data, overrides, path.name)


def test_a_run_of_a_builtin_scenario_imports_no_yaml() -> None:
    code = (
        "import sys\n"
        "from cloudmatrix.sim.engine import simulate\n"
        "from cloudmatrix.sim.scenario import load_scenario\n"
        "simulate(load_scenario(None, ['requests=300']))\n"  # the first run may parse and store the files
        "sys.modules.pop('yaml', None)\n"
        "simulate(load_scenario(None, ['requests=300', 'seed=2'])).to_dict()\n"
        "print('yaml' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
