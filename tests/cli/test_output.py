"""The one file writer (cli/output.py): every kind of target, checked before anything is touched; a regular
file (or a symlink's regular target) replaced atomically with its mode kept; ``-`` for standard output; every
OS error one line. Then each writing command end to end against a FIFO, a device, a symlink and ``-``."""

import csv
import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.validation import VALIDATION_DIR
from cloudmatrix.cli import output
from cloudmatrix.cli.app import app
from cloudmatrix.inputs import InputError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _write(path: Path | str, content: output.Content = "new\n") -> output.Target:
    target = output.resolve(str(path), "--out")
    output.write(target, content)
    return target


def _refused(path: Path | str, message: str) -> None:
    with pytest.raises(InputError, match=message) as e:
        _write(path)
    assert "\n" not in str(e.value) and str(e.value).startswith("--out")


def _no_temporaries(directory: Path) -> None:
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def untouchable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused target must be refused before anything is opened, created or renamed."""

    def boom(*_args, **_kwargs):
        raise AssertionError("the writer touched the file system after refusing")

    monkeypatch.setattr(os, "open", boom)
    monkeypatch.setattr(os, "replace", boom)


# ---- targets the writer takes ------------------------------------------------------------------------
def test_a_new_file_gets_the_umasks_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        _write(tmp_path / "new.csv", "a,b\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.csv").read_text() == "a,b\n"
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o644
    _no_temporaries(tmp_path)


def test_an_existing_file_is_replaced_atomically_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "old.html"
    path.write_text("old")
    path.chmod(0o604)
    inode = path.stat().st_ino
    _write(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o604
    assert path.stat().st_ino != inode  # a new file renamed into place, not the old one truncated
    _no_temporaries(tmp_path)


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "real.csv"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    target = _write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)  # the link stays a link
    assert real.read_bytes() == b"new" and stat.S_IMODE(real.stat().st_mode) == 0o640
    assert target.shown == f"{real} (via {link})"
    _no_temporaries(tmp_path / "data")  # the temporary file went in the target's directory
    _no_temporaries(tmp_path)


def test_a_chain_of_symlinks_reaches_the_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("old")
    (tmp_path / "one").symlink_to(real)
    (tmp_path / "two").symlink_to(tmp_path / "one")
    _write(tmp_path / "two")
    assert real.read_text() == "new\n" and (tmp_path / "two").is_symlink() and (tmp_path / "one").is_symlink()


def test_a_plain_path_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _write("./out.csv").shown == "./out.csv" and Path("out.csv").read_text() == "new\n"


def test_standard_output_takes_text_and_bytes(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    _write("-", "text\n")
    _write("-", PNG)
    assert capsysbinary.readouterr().out == b"text\n" + PNG


# ---- targets it refuses --------------------------------------------------------------------------------
@pytest.mark.usefixtures("untouchable")
def test_a_device_is_refused_before_it_is_touched() -> None:
    before = os.stat("/dev/null")
    _refused("/dev/null", "/dev/null: is a character device; expected a regular file")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_rdev, after.st_ino) == (before.st_rdev, before.st_ino)


@pytest.mark.usefixtures("untouchable")
def test_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _refused(fifo, "is a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.usefixtures("untouchable")
def test_a_symlink_to_a_device_or_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    (tmp_path / "to-null").symlink_to("/dev/null")
    _refused(tmp_path / "to-fifo", r"fifo \(via .*to-fifo\): is a FIFO")
    _refused(tmp_path / "to-null", r"/dev/null \(via .*to-null\): is a character device")


@pytest.mark.usefixtures("untouchable")
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "empty path; expected a file name, or - for standard output"),
        (".", "is a directory"),
        ("/", "names a directory"),
        ("{tmp}", "is a directory"),
        ("{tmp}/new/", "names a directory"),
        ("{tmp}/missing/x.csv", "directory .*missing does not exist"),
        ("{tmp}/file/x.csv", r"cannot write \(Not a directory\)"),
        ("{tmp}/" + "a" * 300, r"cannot write \(File name too long\)"),
        ("{tmp}/dangling", r"a symlink to a missing file \(nowhere\)"),
        ("{tmp}/loop", r"cannot write \(Too many levels of symbolic links\)"),
    ],
)
def test_what_is_not_a_regular_file_is_refused(tmp_path: Path, given: str, message: str) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    _refused(given.format(tmp=tmp_path), message)
    assert (tmp_path / "dangling").is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_target_swapped_for_a_fifo_after_the_check_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    target = output.resolve(str(path), "--out")  # a new file when the command started
    os.mkfifo(path)  # ... a FIFO by the time it writes
    with pytest.raises(InputError, match="is a FIFO"):
        output.write(target, "x")
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    _no_temporaries(tmp_path)


PARTS = ["", ".", "..", "/", "new.csv", "file", "dir", "fifo", "link", "dangling", "loop", "a" * 300, "x\0y", "\udcff"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(PARTS), min_size=1, max_size=3), trailing=st.booleans())
def test_any_path_is_written_as_a_regular_file_or_refused_in_one_line(tmp_path: Path, parts, trailing) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh tree for each example
    (root / "dir").mkdir()
    (root / "file").write_text("old")
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to(root / "file")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "loop").symlink_to(root / "loop")
    given_path = str(root) + "/" + "/".join(parts) + ("/" if trailing else "")
    try:
        target = _write(given_path, "new")
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith("--out")
    else:
        assert target.path is not None and target.path.read_text() == "new" and target.path.is_file()
        assert not Path(given_path).is_symlink() or os.path.realpath(given_path) == str(target.path)
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode) and (root / "dangling").is_symlink()
    assert not (root / "nowhere").exists()
    _no_temporaries(root)


# ---- OS errors while writing: one line, the old file intact, no temporary left -----------------------------
@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("open", errno.EROFS),  # a read-only file system (root ignores mode bits, so it is simulated)
        ("open", errno.EACCES),  # a directory the user may not write
        ("fsync", errno.ENOSPC),  # the disk filled up
        ("replace", errno.EXDEV),
    ],
)
def test_os_errors_while_writing_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old")
    real = getattr(os, call)

    def fail(*args, **kwargs):
        if call == "open" and not str(args[0]).endswith(".tmp"):
            return real(*args, **kwargs)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(InputError, match=rf"--out {path}: cannot write \({os.strerror(code)}\)$"):
        _write(path)
    assert path.read_text() == "old"
    _no_temporaries(tmp_path)


def test_an_interrupted_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old")

    def interrupted(f):
        f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _write(path, interrupted)
    assert path.read_text() == "old"
    _no_temporaries(tmp_path)


# ---- the commands end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with (VALIDATION_DIR / "inferencemax-public.csv").open() as f:
        picked = [r for r in csv.DictReader(f) if r["osl"] == "1024" and r["hw"] == "h100"][:1]
    path = tmp_path_factory.mktemp("corpus") / "one.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(picked[0]))
        w.writeheader()
        w.writerows(picked)
    return path


WRITERS = {  # flag -> (the command before it, what the file starts with)
    "simulate --requests-csv": (["simulate", "--set", "requests=30"], b"id,input_len"),
    "simulate --timeline-csv": (["simulate", "--set", "requests=30"], b"kind,instance"),
    "compare --plot": (["compare", "--systems", "cloudmatrix384"], PNG),
    "plan --plot": (["plan", "--no-check", "--precision", "int8", "--chips", "64", "--top", "1"], PNG),
    "plan --write-scenario": (["plan", "--no-check", "--precision", "int8", "--chips", "64", "--top", "1"], b"#"),
    "validate --plot": (["validate", "{corpus}", "--jobs", "1"], PNG),
    "report --out": (["report", "--systems", "cloudmatrix384"], b"<!doctype html>"),
}


def _args(key: str, target: str, corpus: Path) -> list[str]:
    command, _ = WRITERS[key]
    return [a.format(corpus=corpus) for a in command] + [key.split()[1], target]


@pytest.mark.parametrize("key", WRITERS)
def test_every_writer_refuses_a_fifo_and_a_device_up_front(tmp_path: Path, small_csv: Path, key: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, kind in ((fifo, "is a FIFO"), (Path("/dev/null"), "is a character device")):
        res = runner.invoke(app, _args(key, str(target), small_csv))
        assert res.exit_code == 2, res.output
        assert res.stderr.strip().splitlines() == [
            f"error: {key.split()[1]} {target}: {kind}; expected a regular file or a new file's name"
        ]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("key", WRITERS)
def test_every_writer_follows_a_symlink(tmp_path: Path, small_csv: Path, key: str) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    real.write_bytes(b"old")
    real.chmod(0o600)
    link.symlink_to(real)
    res = runner.invoke(app, _args(key, str(link), small_csv))
    assert res.exit_code == 0, res.output
    assert f"wrote {real} (via {link})" in res.stderr
    assert link.is_symlink() and real.read_bytes().startswith(WRITERS[key][1])
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    _no_temporaries(tmp_path)


@pytest.mark.parametrize("key", ["simulate --requests-csv", "compare --plot", "plan --write-scenario"])
def test_dash_writes_standard_output_and_the_table_goes_to_stderr(small_csv: Path, key: str) -> None:
    res = runner.invoke(app, _args(key, "-", small_csv))
    assert res.exit_code == 0, res.output
    assert res.stdout_bytes.startswith(WRITERS[key][1])
    assert "wrote standard output" in res.stderr and "┃" in res.stderr  # the table, on stderr


def test_standard_output_is_claimed_once() -> None:
    res = runner.invoke(app, ["simulate", "--requests-csv", "-", "--json"])
    assert res.exit_code == 2 and "--requests-csv - and --json both write standard output" in res.stderr
    res = runner.invoke(app, ["simulate", "--requests-csv", "-", "--timeline-csv", "-"])
    assert res.exit_code == 2 and "--requests-csv and --timeline-csv are both -" in res.stderr
