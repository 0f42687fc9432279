"""Bounds checked before any work: YAML whose aliases expand past ``MAX_YAML_NODES`` (billion laughs) or
refer to themselves, worker counts over the machine's cores, and lists of systems (de-duplicated in order,
then checked against the catalog) are refused with one line, exit 2."""

import json
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix import inputs
from cloudmatrix.catalog.hardware import system_ids
from cloudmatrix.catalog.overrides import parse_value
from cloudmatrix.cli.app import app
from cloudmatrix.csv_input import read_csv_rows
from cloudmatrix.errors import ConfigError, UnknownIdError
from cloudmatrix.inputs import MAX_DEPTH, MAX_YAML_NODES, InputError, check_local_workers, parse_yaml
from cloudmatrix.studies.compare_terms import system_list

runner = CliRunner()
CORES = os.cpu_count() or 1


def _laughs(levels: int, width: int, flow: bool = True) -> str:
    """A billion-laughs document: each level lists ``width`` aliases of the one below."""
    if flow:
        lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
        lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
        return "\n".join(lines) + "\n"
    lines = ["l0: &l0"] + ["  - lol"] * width
    for i in range(1, levels):
        lines += [f"l{i}: &l{i}"] + [f"  - *l{i - 1}"] * width
    return "\n".join(lines) + "\n"


def _merge_laughs(levels: int, width: int) -> str:
    """The same with mappings and merge keys: each level merges ``width`` copies of the one below."""
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: lol" for j in range(width)) + "}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(width)) + "}")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion laughs, flow": _laughs(9, 10),
    "billion laughs, block": _laughs(9, 10, flow=False),
    "wide and shallow": _laughs(3, 1000),
    "narrow and deep": _laughs(30, 2),
    "mappings": _merge_laughs(9, 10),
}


class _Spy:
    """Counts the nodes the graph walk looks at, and fails if any Python object is built."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.visits = 0
        walk = inputs._yaml_children

        def children(node: yaml.Node) -> list[yaml.Node]:
            self.visits += 1
            return walk(node)

        def construct(*_: object) -> None:
            raise AssertionError("a refused document must not be built")

        monkeypatch.setattr(inputs, "_yaml_children", children)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the one inputs.parse_yaml uses
        monkeypatch.setattr(loader, "construct_document", construct)


@pytest.mark.parametrize("name", BOMBS)
def test_alias_bombs_are_refused_before_anything_is_built(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    text = BOMBS[name]
    spy = _Spy(monkeypatch)
    with pytest.raises(InputError, match=f"bomb.yaml: expands to more than {MAX_YAML_NODES:,} nodes"):
        parse_yaml(text, "bomb.yaml")
    assert spy.visits <= 2 * len(text)  # each distinct node is walked once (twice counting its exit)


@pytest.mark.parametrize("name", BOMBS)
def test_every_yaml_file_surface_refuses_them(tmp_path, name: str) -> None:
    """Scenario and workload files go through the same reader."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMBS[name])
    for args in (["simulate", str(path)], ["plan", "--workload", str(path), "--no-check"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "expands to more than 1,000,000 nodes" in res.output, (args, res.output)


@pytest.mark.parametrize("name", [n for n in BOMBS if "block" not in n])
def test_a_set_value_refuses_them(name: str) -> None:
    value = "{" + ", ".join(BOMBS[name].splitlines()) + "}"  # the document as one flow mapping
    with pytest.raises(ConfigError, match="--set 'system.x=...': value: expands to more than 1,000,000 nodes"):
        parse_value(value, "system.x=...")


@pytest.mark.parametrize(
    "text",
    ["&a [*a]", "a: &x {b: *x}", "a: &x [1, [2, {c: *x}]]", "&k {*k : 1}"],
)
def test_recursive_aliases_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="an alias refers to a node that contains it"):
        parse_yaml(text, "loop.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_laughs(3, 10), 3),  # 1,000 leaves: shared aliases are fine while the expansion is small
        ("a: &x {b: 1}\nc: *x\nd: *x", 3),
        ("base: &b {x: 1}\nderived: {<<: *b, y: 2}", 2),
        ("", None),
    ],
)
def test_small_documents_with_aliases_still_load(text: str, expected: int | None) -> None:
    data = parse_yaml(text, "ok.yaml")
    assert (len(data) if data is not None else None) == expected


def test_the_node_bound_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list of n items (an anchored one and its aliases) is n + 1 nodes: the largest allowed loads, one
    more is refused. A document without an alias is a tree its byte limit bounds, so it is not walked."""
    monkeypatch.setattr(inputs, "MAX_YAML_NODES", 100)
    assert len(parse_yaml("[&a 0" + ", *a" * 98 + "]", "flat.yaml")) == 99
    with pytest.raises(InputError, match="expands to more than 100 nodes"):
        parse_yaml("[&a 0" + ", *a" * 99 + "]", "flat.yaml")
    assert len(parse_yaml("[" + ", ".join(["0"] * 200) + "]", "flat.yaml")) == 200


def test_depth_is_measured_on_the_graph() -> None:
    nested = "a: &a " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)  # the mapping is the first level
    assert parse_yaml(nested, "ok.yaml")
    with pytest.raises(InputError, match=f"nested more than {MAX_DEPTH} levels"):
        parse_yaml(nested + "\nb: [*a]", "deep.yaml")


# ---- workers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -1, CORES + 1, 10**6])
def test_worker_counts_outside_the_cores_are_refused(value: int) -> None:
    with pytest.raises(InputError, match=f"--jobs: got {value}; expected 1 to {CORES} \\(the cores"):
        check_local_workers("--jobs", value)


@pytest.mark.parametrize("value", [None, 1, CORES])
def test_worker_counts_within_the_cores_pass(value: int | None) -> None:
    check_local_workers("--jobs", value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "published", "--jobs", str(CORES + 1)], f"--jobs: got {CORES + 1}; expected 1 to {CORES}"),
        (["validate", "published", "--jobs", "100000", "--ray"], "--jobs: got 100000; expected 1 to"),
        (["validate", "published", "--jobs", "2", "--ray-address", "10.0.0.1:1"], "--jobs: has no effect on the"),
        (["plan", "--ray-cpus", str(CORES + 1)], f"--ray-cpus: got {CORES + 1}; expected 1 to {CORES}"),
        (["plan", "--ray-cpus", "4", "--ray-address", "10.0.0.1:1"], "--ray-cpus: has no effect on the Ray"),
    ],
)
def test_commands_refuse_workers_before_starting(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and message in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


# ---- lists of systems --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("hgx-h100", ["hgx-h100"]),
        (",".join(["hgx-h100"] * 1000), ["hgx-h100"]),
        ("hgx-h200, hgx-h100,hgx-h200 ,hgx-h100", ["hgx-h200", "hgx-h100"]),
    ],
)
def test_systems_are_deduplicated_in_order(given: str, expected: list[str]) -> None:
    assert system_list(given) == expected


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        (",".join(f"s{i}" for i in range(1000)), ConfigError, "--system: 1,000 distinct ids; expected at most"),
        ("hgx-h100,,hgx-h200", ConfigError, "--system: an empty id"),
        ("hgx-h100," + "dgx9," * 500, UnknownIdError, "unknown system 'dgx9'"),
    ],
)
def test_bad_system_lists_are_refused_before_any_is_priced(given: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        system_list(given)


def test_every_catalog_system_at_once_is_allowed() -> None:
    assert system_list(",".join(system_ids())) == list(system_ids())


@pytest.mark.parametrize("command", ["compare", "report"])
def test_compare_and_report_take_a_repeated_system_once(tmp_path, command: str) -> None:
    out = ["--out", str(tmp_path / "r.html")] if command == "report" else []
    res = runner.invoke(app, [command, *out, "--systems", ",".join(["hgx-h100"] * 1000), "--json"])
    assert res.exit_code == 0, res.output
    if command == "compare":
        assert [s["system"] for s in json.loads(res.stdout)["systems"]] == ["hgx-h100"]
    bad = runner.invoke(app, [command, *out, "--systems", ",".join(f"s{i}" for i in range(100))])
    assert bad.exit_code == 2 and "--system: 100 distinct ids; expected at most" in bad.stderr


# ---- every CSV input ---------------------------------------------------------------------------------
TRACE = "timestamp,input_length,output_length\n0,100,10\n5,200,20\n"
CSV_FAULTS = {  # a fault -> (how to make it from good text, what the refusal says)
    "short row": (lambda t: t.rstrip("\n") + "\n1\n", "line 4: 1 cells; expected"),
    "open quote": (lambda t: t + '"9,9\n', "line 4, column 1 ("),
    "huge cell": (lambda t: t + "9" * 70_000 + "\n", "line 4, column 1 ("),
    "NUL": (lambda t: t.replace("0", "\0", 1), "a NUL character"),
    "repeated column": (lambda t: t.replace("\n", "," + t.split(",")[0] + "\n", 1), "appears twice (columns 1 and"),
}


def _trace_reader(path):
    from cloudmatrix.workload.trace import read_trace

    return read_trace(path)


def _corpus_reader(path):
    from cloudmatrix.catalog.inferencemax import read_inferencemax

    return read_inferencemax(path)


def _corpus_text() -> str:
    from cloudmatrix.catalog.validation import VALIDATION_DIR

    return "\n".join((VALIDATION_DIR / "inferencemax-public.csv").read_text().splitlines()[:3]) + "\n"


READERS = {"trace": (_trace_reader, lambda: TRACE), "corpus": (_corpus_reader, _corpus_text)}


@pytest.mark.parametrize("fault", CSV_FAULTS)
@pytest.mark.parametrize("reader", READERS)
def test_every_csv_reader_refuses_the_same_faults(tmp_path, reader: str, fault: str) -> None:
    read, good = READERS[reader]
    make, message = CSV_FAULTS[fault]
    path = tmp_path / "in.csv"
    path.write_text(make(good()))
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        read(path)
    assert "\n" not in str(e.value) and "in.csv" in str(e.value)


@pytest.mark.parametrize("reader", READERS)
def test_every_csv_reader_reads_an_excel_bom(tmp_path, reader: str) -> None:
    read, good = READERS[reader]
    plain, marked = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text(good())
    marked.write_bytes(b"\xef\xbb\xbf" + good().encode())
    assert repr(read(marked)) == repr(read(plain))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list('ab1,"\n\r \0\ufeff\u2028é')), max_size=60))
def test_any_text_reads_as_even_rows_or_fails_as_one_line(tmp_path, text: str) -> None:
    path = tmp_path / "any.csv"
    path.write_bytes(text.encode())
    try:
        header, rows = read_csv_rows(path, "csv", max_bytes=1000, max_rows=5)
    except InputError as e:
        assert "\n" not in str(e) and "\r" not in str(e) and "any.csv" in str(e)
    else:
        assert len(rows) <= 5 and all(len(cells) == len(header) for _, cells in rows)
        assert [line for line, _ in rows] == sorted({line for line, _ in rows}) and all(line > 1 for line, _ in rows)
