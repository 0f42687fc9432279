"""The one writer of every file the CLI makes (``--out``, ``--plot``, ``--requests-csv``, ``--timeline-csv``,
``--write-scenario``, the maintainers' residual and role tables). A target is checked before a command runs
and again when written: it must be a new file in an existing directory or an existing regular file (a symlink
to one is followed); a device, FIFO, socket, directory or dangling symlink is refused, never replaced. The data
goes to a temporary file in the target's directory, renamed over it (an interrupted write leaves the old file),
with the old file's mode. ``-`` is standard output; the tables then go to stderr."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cloudmatrix.cli import common as cli
from cloudmatrix.inputs import READ_FILES, InputError

STDOUT = "-"
# What a command writes: text, bytes (a PNG), or a function that writes text to a stream (a large CSV)
Content = str | bytes | Callable[[IO[str]], object]
KINDS = {  # file types a path may name, other than a regular file
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where one output goes: ``path`` is the regular file created or replaced (the symlink's target when
    ``given`` is a symlink: ``via_link``), None for standard output; ``st`` the existing file's status (None:
    a new file)."""

    flag: str
    given: str
    path: Path | None
    st: os.stat_result | None = None
    via_link: bool = False

    @property
    def shown(self) -> str:
        if self.path is None:
            return "standard output"
        return f"{self.path} (via {self.given})" if self.via_link else self.given


def _existing(path: Path, given: str, flag: str) -> os.stat_result | None:
    """What stands at ``path`` (not following a link), or None for a new name whose parent can take it."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        _check_parent(path, flag)
        return None
    except (OSError, ValueError) as e:
        raise _cannot(flag, given, e) from None


def resolve(given: str, flag: str) -> Target:
    """The target ``given`` names, or an ``InputError`` line saying why nothing may be written there."""
    if given == STDOUT:
        return Target(flag=flag, given=given, path=None)
    if not given:
        raise InputError(f"{flag}: empty path; expected a file name, or - for standard output")
    if given.endswith("/"):
        raise InputError(f"{flag} {given}: names a directory; expected a file")
    path = Path(given)
    st = _existing(path, given, flag)
    if st is None:
        return Target(flag=flag, given=given, path=path)
    via_link = stat.S_ISLNK(st.st_mode)
    if via_link:
        path, st = _follow(path, flag)
    if not stat.S_ISREG(st.st_mode):
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        shown = f"{path} (via {given})" if via_link else given
        raise InputError(f"{flag} {shown}: is {kind}; expected a regular file or a new file's name")
    return Target(flag=flag, given=given, path=path, st=st, via_link=via_link)


def _check_parent(path: Path, flag: str) -> None:
    try:
        st = os.stat(path.parent)
    except FileNotFoundError:
        raise InputError(f"{flag} {path}: directory {path.parent} does not exist") from None
    except OSError as e:
        raise _cannot(flag, str(path), e) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{flag} {path}: {path.parent} is not a directory")


def _follow(link: Path, flag: str) -> tuple[Path, os.stat_result]:
    """A symlink's final target and its status; a dangling link or a loop is refused."""
    try:
        real = Path(os.path.realpath(link, strict=True))
        return real, os.stat(real)
    except FileNotFoundError:
        raise InputError(
            f"{flag} {link}: a symlink to a missing file ({os.readlink(link)}); expected a regular file"
        ) from None
    except OSError as e:
        raise _cannot(flag, str(link), e) from None


def _cannot(flag: str, given: str, e: Exception) -> InputError:
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return InputError(f"{flag} {given}: cannot write ({why})")


def write(target: Target, content: Content) -> None:
    """``content`` into ``target``: checked again, then written to standard output or through a temporary
    file renamed over the target. Any OS error (disk full, read-only, permission) is one ``InputError``."""
    if target.path is None:
        _to_stdout(target, content)
        return
    fresh = resolve(target.given, target.flag)  # the path may have changed while the command ran
    assert fresh.path is not None
    tmp = fresh.path.with_name(f".{fresh.path.name[:200]}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)  # mode: the umask's
        with os.fdopen(fd, "wb") as f:
            _write_stream(f, content)
            if fresh.st is not None:
                _keep_mode(f.fileno(), fresh.st)
            f.flush()
            os.fsync(f.fileno())
        resolve(target.given, target.flag)  # still a regular file or nothing, not swapped for a device
        _not_an_input(fresh)
        os.replace(tmp, fresh.path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _cannot(target.flag, fresh.shown, e) from None
    except BaseException:  # interrupted (SIGINT) or refused: the old file stays, the partial one goes
        tmp.unlink(missing_ok=True)
        raise


def _not_an_input(target: Target) -> None:
    """Refuse to replace a file this command read as input (a scenario, trace, config or corpus)."""
    if target.st is not None and (target.st.st_dev, target.st.st_ino) in READ_FILES:
        raise InputError(
            f"{target.flag} {target.shown}: is a file this command read as input; expected another path "
            "(writing here would replace the input)"
        )


def _keep_mode(fd: int, st: os.stat_result) -> None:
    """The replaced file's permission bits, and its owner where the process may set it (root)."""
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):  # an ordinary user cannot give a file away
            os.fchown(fd, st.st_uid, st.st_gid)


def _write_stream(f: IO[bytes], content: Content) -> None:
    if isinstance(content, bytes):
        f.write(content)
    elif isinstance(content, str):
        f.write(content.encode("utf-8"))
    else:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        content(text)
        text.flush()
        text.detach()


def _to_stdout(target: Target, content: Content) -> None:
    try:
        if isinstance(content, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(content)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(content) if isinstance(content, str) else content(sys.stdout)
            sys.stdout.flush()
    except OSError as e:
        raise _cannot(target.flag, STDOUT, e) from None


def _distinct(targets: dict[str, Target]) -> None:
    """Two flags of one command naming one file: the second write would silently replace the first."""
    seen: dict[str, str] = {}
    for flag, t in targets.items():
        if t.path is None:
            continue
        where = os.path.realpath(t.path)  # a new file's name under its real directory; an old one's target
        if where in seen:
            raise InputError(f"{seen[where]} and {flag} both name {t.given}; expected a file for each")
        seen[where] = flag


class Outputs:
    """The files one command writes, by flag, checked before the command does its work (a bad target fails
    at once, not after a long run). At most one of them, and not ``--json``, may be standard output; tables
    then go to stderr (``console``)."""

    def __init__(self, given: dict[str, str | None], as_json: bool = False) -> None:
        self.targets = cli._run(lambda: {f: resolve(g, f) for f, g in given.items() if g is not None})
        READ_FILES.clear()  # the command's inputs are read from here on
        cli._run(lambda: _distinct(self.targets))
        to_stdout = [f for f, t in self.targets.items() if t.path is None]
        if len(to_stdout) > 1:
            cli._fail(f"{' and '.join(to_stdout)} are both -; standard output takes one of them")
        if to_stdout and as_json:
            cli._fail(f"{to_stdout[0]} - and --json both write standard output; give {to_stdout[0]} a file name")
        self.stdout_taken = bool(to_stdout)

    @property
    def console(self) -> cli.LazyConsole:
        return cli.err if self.stdout_taken else cli.out

    def __contains__(self, flag: str) -> bool:
        return flag in self.targets

    def write(self, flag: str, content: Content, note: str = "") -> str:
        """Write the flag's target and say so on stderr (``wrote PATH`` and the note); returns what was shown."""
        target = self.targets[flag]
        cli._run(lambda: write(target, content))
        cli.err.print(f"wrote {target.shown}{note}", markup=False, highlight=False, soft_wrap=True)
        return target.shown


def write_file(path: Path, flag: str, content: Content, note: str = "") -> None:
    """One file at a path the command chose (the catalog's residual table), through the same writer."""
    Outputs({flag: str(path)}).write(flag, content, note)


@dataclass(frozen=True, kw_only=True)
class DirTarget:
    """A directory a command writes several files into (``plan --emit``): an existing real directory (never a
    symlink to one) or a new one whose parent exists."""

    flag: str
    given: str
    exists: bool


def resolve_directory(given: str, flag: str) -> DirTarget:
    """The directory ``given`` names, or an ``InputError`` line saying why no files may be written there."""
    if not given or given == STDOUT:
        raise InputError(f"{flag} {given!r}: expected a directory name (files are written inside it)")
    st = _existing(Path(given), given, flag)
    if st is None:
        return DirTarget(flag=flag, given=given, exists=False)
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{flag} {given}: is a symlink; expected a directory (links are not followed)")
    if not stat.S_ISDIR(st.st_mode):
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "a regular file")
        raise InputError(f"{flag} {given}: is {kind}; expected a directory or a new directory's name")
    return DirTarget(flag=flag, given=given, exists=True)


def write_directory(target: DirTarget, files: dict[str, str]) -> list[str]:
    """Each ``files`` entry (a plain name) inside the directory, created if new. The directory is opened once
    without following links and every file is made relative to it: an entry that is a symlink, a device, a
    FIFO or a directory is refused before anything is written, and a file this command read is never
    replaced. Each file goes through a temporary renamed over it. Returns the paths written."""
    resolve_directory(target.given, target.flag)  # checked again: it may have changed while the command ran
    for name in files:
        if not name or "/" in name or name in (".", ".."):
            raise InputError(f"{target.flag}: bad file name {name!r}")
    try:
        if not os.path.lexists(target.given):
            os.mkdir(target.given, 0o777)
        fd = os.open(target.given, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise _cannot(target.flag, target.given, e) from None
    try:
        existing = {name: _entry(fd, name, target) for name in files}
        for name, content in files.items():
            _write_entry(fd, name, content, existing[name], target)
    finally:
        os.close(fd)
    return [str(Path(target.given) / name) for name in files]


def _entry(fd: int, name: str, target: DirTarget) -> os.stat_result | None:
    """The status of an existing entry (a regular file only, not a command input), None for a new one."""
    shown = Path(target.given) / name
    try:
        st = os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _cannot(target.flag, str(shown), e) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise InputError(f"{target.flag} {shown}: is {kind}; expected a regular file or a new file's name")
    if (st.st_dev, st.st_ino) in READ_FILES:
        raise InputError(f"{target.flag} {shown}: is a file this command read as input; expected another path")
    return st


def _write_entry(fd: int, name: str, content: str, st: os.stat_result | None, target: DirTarget) -> None:
    tmp = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
    mode = 0o777 if name.endswith(".sh") else 0o666  # scripts executable (under the umask)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        out = os.open(tmp, flags, mode, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            f.write(content.encode("utf-8"))
            if st is not None:
                _keep_mode(f.fileno(), st)
            f.flush()
            os.fsync(f.fileno())
        _entry(fd, name, target)  # still a regular file or nothing
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
        raise _cannot(target.flag, str(Path(target.given) / name), e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
        raise
