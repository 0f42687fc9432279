"""Every command and flag that takes a path, read or written, fails on an OS error of that path (a name too
long, a regular file used as a directory, a NUL byte in a file's field) with one line and exit 2, through the
real entry point (exit 3 is for bugs only)."""

from pathlib import Path

import pytest
import yaml

from cloudmatrix.cli.app import main
from cloudmatrix.sim.scenario import SCENARIO_DIR

READS = [  # (command line with {path}, the suffix the path gets)
    ("simulate {path}", ".yaml"),
    ("simulate {path}", ""),  # a name: a built-in scenario or a file
    ("simulate --set model={path}", ".json"),
    ("simulate --set model={path}", ""),
    ("simulate --set workload.trace={path}", ".jsonl"),
    ("serve {path}", ".yaml"),
    ("serve {path}", ""),
    ("serve --tokenizer {path}", ".json"),
    ("plan --workload {path} --no-check", ".yaml"),
    ("plan --workload {path} --no-check", ".jsonl"),
    ("plan --model {path} --no-check", ""),
    ("validate {path}", ".csv"),
    ("validate {path}", ".yaml"),
    ("estimate --model {path}", ".json"),
    ("estimate --model {path}", ""),
    ("estimate --routing {path}", ""),
    ("compare --model {path}", ".json"),
    ("report --model {path}", ".json"),
    ("report --validate-json {path}", ".json"),
]
WRITES = [
    ("simulate --set requests=10 --requests-csv {path}", ".csv"),
    ("simulate --set requests=10 --timeline-csv {path}", ".csv"),
    ("compare --plot {path}", ".png"),
    ("plan --plot {path}", ".png"),
    ("plan --write-scenario {path}", ".yaml"),
    ("plan --emit {path}", "-dir"),
    ("validate --plot {path}", ".png"),
    ("report --out {path}", ".html"),
]


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in err
    return lines[0]


def _paths(tmp_path: Path, suffix: str) -> dict[str, str]:
    (tmp_path / "file").write_text("x")
    return {
        "name too long": str(tmp_path / ("a" * 300 + suffix)),
        "through a file": str(tmp_path / "file" / ("x" + suffix)),
    }


@pytest.mark.parametrize(("command", "suffix"), READS + WRITES, ids=lambda v: v or "no suffix")
@pytest.mark.parametrize("kind", ["name too long", "through a file"])
def test_an_unusable_path_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, suffix: str, kind: str
) -> None:
    path = _paths(tmp_path, suffix)[kind]
    line = _one_line_exit_2(capsys, [a.format(path=path) for a in command.split()])
    why = "File name too long" if kind == "name too long" else "Not a directory"
    assert line.endswith(f"{path}: cannot {'write' if (command, suffix) in WRITES else 'read'} ({why})")


def test_a_bare_name_too_long_is_no_catalog_id_and_no_crash(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("simulate", "serve", "validate", "estimate --model", "estimate --routing", "plan --model"):
        _one_line_exit_2(capsys, [*command.split(), "n" * 300])


@pytest.mark.parametrize(
    ("field", "value"),
    [("model", "a\0b.json"), ("workload.trace", "a\0b.jsonl"), ("model", "m" * 300)],
)
def test_paths_inside_a_scenario_fail_cleanly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, value: str
) -> None:
    data = yaml.safe_load((SCENARIO_DIR / "cm384-paper.yaml").read_text())
    node = data
    *parents, leaf = field.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(data))
    _one_line_exit_2(capsys, ["simulate", str(scenario)])


@pytest.mark.parametrize("trace", ["a\0b.jsonl", 5])
def test_a_planners_workload_with_an_odd_trace_fails_cleanly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, trace: object
) -> None:
    workload = tmp_path / "w.yaml"
    workload.write_text(yaml.safe_dump({"trace": trace}))
    _one_line_exit_2(capsys, ["plan", "--workload", str(workload), "--no-check"])
