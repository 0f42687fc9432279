"""The one validation layer for what users hand the twin: numbers (CLI flags, deployment fields, ``--set``
values, HTTP bodies) and files (scenarios, traces, model configs, routing histograms). Every problem is one
``InputError`` line naming the field, the value and what was expected; nothing here reads the catalog."""

from __future__ import annotations

import json
import math
import numbers
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cloudmatrix.errors import ConfigError

MAX_FILE_BYTES = 256 * 1024 * 1024  # a trace of a few million requests; larger inputs are refused up front
MAX_YAML_BYTES = 4 * 1024 * 1024  # scenario and config files are small
MAX_DEPTH = 32  # nesting of a scenario, config or JSON body
MAX_TOKENS = 10_000_000  # one prompt or completion
MAX_REQUESTS = 1_000_000  # requests one simulation may run (the largest public validation row runs 30,720)
MAX_SIM_S = 1e7  # simulated seconds one run may span (116 days): slower arrivals are refused up front
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InputError(ConfigError):
    """A value or file the twin cannot take; the message says which, what it was and what was expected."""


def check_number(
    field: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> None:
    """A finite number (an integer where ``integer``) within [lo, hi] (an end excluded where ``*_open``)."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{field}: got {value!r}; expected {kind}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{field}: got {value}; expected a finite number")
    if integer and not value.is_integer():
        raise InputError(f"{field}: got {value}; expected an integer")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        lower = "" if lo is None else (f"> {_shown(lo)}" if lo_open else f">= {_shown(lo)}")
        upper = "" if hi is None else (f"< {_shown(hi)}" if hi_open else f"<= {_shown(hi)}")
        bounds = " and ".join(b for b in (lower, upper) if b)
        got = f"{int(value)}" if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
        raise InputError(f"{field}: got {got}; expected {kind} {bounds}")


def _shown(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 1000 else f"{float(x):g}"


def check_optional(field: str, value: Any, **bounds: Any) -> None:
    if value is not None:
        check_number(field, value, **bounds)


def depth(obj: Any) -> int:
    """Nesting depth of parsed YAML or JSON, iteratively (a hostile file must not exhaust the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return deepest


def cannot_read(what: str, path: Path | str, e: OSError | ValueError) -> InputError:
    """An OS error on a path the user gave (a name too long, a file used as a directory, no permission, a
    symlink loop, a NUL byte) as one line."""
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return InputError(f"{what} {path}: cannot read ({why})")


def path_exists(path: Path, what: str) -> bool:
    """Whether ``path`` names something, for telling a catalog name from a path; unlike ``Path.exists`` an OS
    error other than "no such file" is refused as ``what`` rather than raised or taken for absence."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as e:
        raise cannot_read(what, path, e) from None
    return True


def names_file(directory: Path, name: str) -> bool:
    """Whether ``name`` is a regular file directly in ``directory`` (the catalog's built-ins); a name that
    could not be one (a path, too long, a NUL byte) is not."""
    if "/" in name or name in ("", ".", ".."):
        return False
    try:
        return (directory / name).is_file()
    except (OSError, ValueError):
        return False


def read_text(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A regular file's text: it must exist, be a file (not a directory or device), be at most
    ``max_bytes`` and decode as UTF-8."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} {path}: file not found") from None
    except (OSError, ValueError) as e:
        raise cannot_read(what, path, e) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InputError(f"{what} {path}: is {kind}; expected a file")
    if st.st_size > max_bytes:
        raise InputError(f"{what} {path}: {st.st_size:,} bytes; expected at most {max_bytes:,}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise cannot_read(what, path, e) from None


def parse_yaml(text: str, origin: str) -> Any:
    """YAML text, refused with one line when malformed or nested deeper than ``MAX_DEPTH``."""
    return _parse(lambda: yaml.load(text, Loader=_LOADER), origin, "YAML", yaml.YAMLError)


def parse_json(text: str, origin: str) -> Any:
    """JSON text, refused with one line when malformed or nested deeper than ``MAX_DEPTH``."""
    return _parse(lambda: json.loads(text), origin, "JSON", json.JSONDecodeError)


def _parse(load: Callable[[], Any], origin: str, kind: str, error: type[Exception]) -> Any:
    try:
        data = load()
    except error as e:
        raise InputError(f"{origin}: not valid {kind} ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{origin}: nested more than {MAX_DEPTH} levels deep") from None
    if depth(data) > MAX_DEPTH:
        raise InputError(f"{origin}: nested more than {MAX_DEPTH} levels deep")
    return data


def read_yaml_file(path: Path, what: str) -> Any:
    return parse_yaml(read_text(path, what, MAX_YAML_BYTES), path.name)


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj
