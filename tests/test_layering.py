"""Imports point downward through the layers of design.md §4; SimPy stays inside sim/."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "cloudmatrix"
LAYER = {
    "units": 0,
    "inputs": 0,
    "csv_input": 0,
    "errors": 0,
    "frozen": 0,
    "catalog": 1,
    "deploy": 2,
    "deploy_checks": 2,
    "deployment": 2,
    "cost": 3,
    "estimate": 4,
    "serving": 5,
    "workload": 5,
    "sim": 6,
    "studies": 7,
    "planner": 7,
    "emulator": 7,
    "report": 7,
    "cli": 8,
}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "cloudmatrix" and len(parts) > 1 else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


MODULES = [p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_downward(path: Path) -> None:
    rel = path.relative_to(PKG)
    own = rel.parts[0].removesuffix(".py")
    assert own in LAYER, f"module {rel} is in no layer of design.md §4"
    for name in _imports(path):
        top = _top(name)
        if top is None or top == own:
            assert not (name.split(".")[0] == "simpy" and own != "sim"), f"{rel} imports simpy outside sim/"
            continue
        assert LAYER[top] <= LAYER[own], f"{rel} (L{LAYER[own]}) imports {name} (L{LAYER[top]})"
