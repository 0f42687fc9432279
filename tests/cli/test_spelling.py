"""One way to say a workload and a system on every command: ``ISL-OSL`` with k suffixes beside
``INPUT/OUTPUT`` (one parser), ``--system`` repeatable and comma-separated (``--systems`` its alias),
``--version``, and progress on stderr, never in ``--json`` stdout."""

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudmatrix import __version__
from cloudmatrix.cli import progress as progress_mod
from cloudmatrix.cli.app import main
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import MAX_TOKENS
from cloudmatrix.workload.shape import NAMED, parse_shape, parse_workload, shape_name

SIDE = st.integers(min_value=1, max_value=9000)  # 9,000k tokens: within MAX_TOKENS


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _json(args: list[str]) -> dict:
    code, out, err = _run([*args, "--json"])
    assert code == 0, err
    return json.loads(out)


@given(SIDE, SIDE, st.booleans(), st.booleans())
def test_isl_osl_with_k_suffixes(i: int, o: int, ki: bool, ko: bool) -> None:
    text = f"{i}{'k' if ki else ''}-{o}{'K' if ko else ''}"
    assert parse_workload(text) == (i * (1024 if ki else 1), o * (1024 if ko else 1))
    assert parse_workload(f"{i}/{o}") == (i, o)
    assert parse_workload(shape_name(*parse_workload(text))) == parse_workload(text)


@given(st.text(max_size=20))
def test_any_text_parses_or_is_refused_in_one_line(text: str) -> None:
    try:
        i, o = parse_workload(text)
    except ConfigError as e:
        assert "\n" not in str(e) and "workload" in str(e)
    else:
        assert 1 <= i <= MAX_TOKENS and 1 <= o <= MAX_TOKENS


def test_the_named_shapes_and_the_issue_examples() -> None:
    assert [parse_workload(n) for n in NAMED] == [(4096, 256), (2048, 256), (1024, 1024)]
    assert parse_workload("2k-2k") == (2048, 2048) and parse_workload("8k-1k") == (8192, 1024)
    assert parse_workload("128k-4k") == (131072, 4096) and parse_workload("2048/2048") == (2048, 2048)
    assert parse_shape("trace.jsonl") is None
    for bad in ("0k-2k", "2k-0", "99999999k-1", "2k-2x", "2k", "-2k"):
        with pytest.raises(ConfigError):
            parse_workload(bad)


WORKLOAD_RUNS = {
    "compare": ["compare", "--system", "gb200-nvl72"],
    "plan": ["plan", "--system", "hgx-h100", "--no-check", "--top", "1", "--precision", "fp8"],
    "simulate": ["simulate", "--system", "gb200-nvl72", "--set", "requests=300"],
}


@pytest.mark.parametrize("command", list(WORKLOAD_RUNS))
def test_2k_2k_works_in_every_command(command: str) -> None:
    d = _json([*WORKLOAD_RUNS[command], "--workload", "2k-2k"])
    if command == "compare":
        assert d["workload"] == {"input_len": 2048, "output_len": 2048}
    elif command == "plan":
        assert (d["workload"]["input_len"], d["workload"]["output_len"]) == (2048, 2048)
    else:
        assert d["scenario"] == "gb200-nvl72-2k-2k" and d["num_requests"] == 300


def test_2k_2k_in_report(tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    d = _json(["report", "--system", "gb200-nvl72", "--workload", "2k-2k", "--out", str(page)])
    assert d["bytes"] > 0 and "2048/2048" in page.read_text()


@pytest.mark.parametrize("command", ["compare", "plan", "simulate", "report"])
def test_a_bad_workload_is_one_line_in_every_command(command: str) -> None:
    code, out, err = _run([command, "--workload", "2k-2x"])
    assert code == 2 and out == "" and err.count("\n") == 1 and "2k-2x" in err and "ISL-OSL" in err


def test_system_is_repeatable_and_comma_separated_with_systems_its_alias() -> None:
    names = ["gb200-nvl72", "hgx-h100", "cloudmatrix384"]
    for args in (
        ["--system", "gb200-nvl72", "--system", "hgx-h100,cloudmatrix384"],
        ["--systems", "gb200-nvl72,hgx-h100,cloudmatrix384"],
        ["--system", "gb200-nvl72,hgx-h100", "--systems", "cloudmatrix384,hgx-h100"],
    ):
        d = _json(["compare", "--workload", "1k-1k", *args])
        assert [s["system"] for s in d["systems"]] == names
    code, _, err = _run(["compare", "--system", "gb200-nvl72,nope"])
    assert code == 2 and "nope" in err


def test_version_is_an_app_option() -> None:
    assert _run(["--version"]) == (0, f"cloudmatrix {__version__}\n", "")
    run = subprocess.run([sys.executable, "-m", "cloudmatrix.cli.app", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == f"cloudmatrix {__version__}\n"


def test_progress_goes_to_stderr_never_into_json(monkeypatch) -> None:
    """With the bar forced on from the first update, compare's JSON on stdout is still one object."""
    real = progress_mod.Console
    monkeypatch.setattr(progress_mod, "SHOW_AFTER_S", -1.0)
    monkeypatch.setattr(progress_mod, "Console", lambda stderr: real(stderr=True, force_terminal=True))
    code, out, err = _run(["compare", "--system", "gb200-nvl72,hgx-h100", "--json"])
    assert code == 0, err
    assert [s["system"] for s in json.loads(out)["systems"]] == ["gb200-nvl72", "hgx-h100"]
    assert "pricing systems" in err


def test_a_single_long_step_shows_the_bar_and_piped_stderr_none(monkeypatch) -> None:
    """The bar appears after the delay even when the work reports no step (compare on one system, a fit);
    on a pipe it never does."""
    import time

    real = progress_mod.Console
    shown, piped = io.StringIO(), io.StringIO()
    monkeypatch.setattr(progress_mod, "SHOW_AFTER_S", 0.05)
    monkeypatch.setattr(progress_mod, "Console", lambda stderr: real(file=shown, force_terminal=True))
    with progress_mod.LazyProgress("one long step") as bar:
        bar.update(0, 1)
        time.sleep(0.5)
    assert "one long step" in shown.getvalue()
    monkeypatch.setattr(progress_mod, "Console", lambda stderr: real(file=piped, force_terminal=False))
    with progress_mod.LazyProgress("quiet") as bar:
        time.sleep(0.2)
        bar.update(1, 2)
    assert piped.getvalue() == "" and bar.bar is None


def test_updates_racing_the_timer_never_fail(monkeypatch) -> None:
    """The timer may start the bar while the work reports steps: no update ever sees a half-made bar."""
    import time

    real = progress_mod.Console
    monkeypatch.setattr(progress_mod, "SHOW_AFTER_S", 0.0)
    monkeypatch.setattr(progress_mod, "Console", lambda stderr: real(file=io.StringIO(), force_terminal=True))
    for _ in range(20):
        with progress_mod.LazyProgress("race") as bar:
            end = time.perf_counter() + 0.01
            i = 0
            while time.perf_counter() < end:
                bar.update(i, 10**6)
                i += 1
