"""The one validation layer for what users hand the twin: numbers (CLI flags, deployment fields, ``--set``
values, HTTP bodies, worker counts) and files (scenarios, traces, model configs, routing histograms, CSV
corpora). Every problem is one ``InputError`` line naming the field, the value and what was expected; nothing
here reads the catalog. Sizes are bounded before the work they would cost starts."""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from cloudmatrix.errors import ConfigError

if TYPE_CHECKING:  # PyYAML loads where a YAML file is read (the catalog's own files come from a cache)
    import yaml

MAX_FILE_BYTES = 256 * 1024 * 1024  # a trace of a few million requests; larger inputs are refused up front
MAX_YAML_BYTES = 4 * 1024 * 1024  # scenario and config files are small
MAX_DEPTH = 32  # nesting of a scenario, config or JSON body
MAX_YAML_NODES = 1_000_000  # nodes a YAML document expands to, an alias counted at every use (billion laughs)
MAX_TOKENS = 10_000_000  # one prompt or completion
MAX_REQUESTS = 1_000_000  # requests one simulation may run (the largest public validation row runs 30,720)
MAX_SIM_S = 1e7  # simulated seconds one run may span (116 days): slower arrivals are refused up front
MAX_EXACT = 10**300  # integers beyond this are past every bound; float() of 10**400 would raise OverflowError
# (device, inode) of every file read as input since the running command declared its outputs: the writer
# refuses to replace one (``simulate s.yaml --requests-csv s.yaml`` would turn the scenario into a CSV)
READ_FILES: set[tuple[int, int]] = set()


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
    if type(value) is int and -MAX_EXACT <= value <= MAX_EXACT or type(value) is float:  # the common case
        number = float(value)
        if (
            math.isfinite(number)
            and (not integer or number.is_integer())
            and (lo is None or (number > lo if lo_open else number >= lo))
            and (hi is None or (number < hi if hi_open else number <= hi))
        ):
            return
    kind = "an integer" if integer else "a number"
    if (
        type(value) is not float
        and type(value) is not int
        and (isinstance(value, bool) or not isinstance(value, numbers.Real))
    ):  # the exact types skip the slow ABC check
        raise InputError(f"{field}: got {_short(value)}; expected {kind}")
    huge = isinstance(value, numbers.Integral) and abs(int(value)) > MAX_EXACT  # float() of it would overflow
    if huge:
        positive = int(value) > 0  # type: ignore[arg-type]
        got = "an integer above 1e300" if positive else "an integer below -1e300"
        value = math.inf if positive else -math.inf
        if lo is None and hi is None:
            raise InputError(f"{field}: got {got}; expected a finite number")
    value = float(value)
    if not math.isfinite(value) and not huge:
        raise InputError(f"{field}: got {value}; expected a finite number")
    if integer and math.isfinite(value) and not value.is_integer():
        raise InputError(f"{field}: got {value}; expected an integer")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        lower = "" if lo is None else (f"> {_shown(lo)}" if lo_open else f">= {_shown(lo)}")
        upper = "" if hi is None else (f"< {_shown(hi)}" if hi_open else f"<= {_shown(hi)}")
        bounds = " and ".join(b for b in (lower, upper) if b)
        if not huge:
            got = f"{int(value)}" if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
        raise InputError(f"{field}: got {got}; expected {kind} {bounds}")
    if huge:  # beyond float, inside only a one-sided bound: still no number the twin can use
        raise InputError(f"{field}: got {got}; expected a finite number")


def _short(value: Any) -> str:
    """A value as shown in a message: its repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _shown(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 1000 else f"{float(x):g}"


def refuse_flag_as_number(annotation: Any, value: Any) -> Any:
    """A schema field's raw value, refused (``ValueError``, for a pydantic ``mode="before"`` validator) when it
    is ``true`` or ``false`` and the field is not a boolean: pydantic's lax mode reads them as 1 and 0, so
    ``requests: true`` ran one request and ``hidden_size: true`` priced a model one unit wide."""
    if isinstance(value, bool) and not _admits_bool(annotation):
        raise ValueError("expected a number or text, not true/false")
    return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any or annotation is None:
        return True
    return any(_admits_bool(a) for a in get_args(annotation) if not isinstance(a, str | int | float))


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
    READ_FILES.add((st.st_dev, st.st_ino))
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise cannot_read(what, path, e) from None


def check_local_workers(field: str, value: int | None, cluster: str | None = None) -> None:
    """A count of local workers (processes, or a local Ray cluster's CPUs): 1 to this machine's cores, since
    more only queue, each with its memory. On a running cluster (``cluster``) its own CPUs set the workers."""
    if value is None:
        return
    if cluster is not None:
        raise InputError(f"{field}: has no effect on the Ray cluster at {cluster} (its CPUs set the workers); drop it")
    cores = os.cpu_count() or 1
    if not 1 <= value <= cores:
        raise InputError(f"{field}: got {value}; expected 1 to {cores} (the cores of this machine)")


def parse_yaml(text: str, origin: str) -> Any:
    """YAML text, refused with one line when malformed, nested deeper than ``MAX_DEPTH`` or expanding (through
    aliases) to more than ``MAX_YAML_NODES`` nodes; the node graph is measured before any object is built."""
    import yaml

    return _parse(lambda: _load_yaml(text, origin), origin, "YAML", yaml.YAMLError)


def _load_yaml(text: str, origin: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml's where PyYAML has it
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if "*" in text:  # without an alias the document is a tree no larger than its text
            _check_yaml_graph(node, origin)
        _check_unique_keys(node, origin)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    _check_plain(data, origin)
    return data


def _check_unique_keys(root: yaml.Node, origin: str) -> None:
    """Refuse a mapping that gives one key twice: YAML keeps the last silently, and which of two values
    the user meant is not the twin's guess. Each node is looked at once (an alias is its node, shared)."""
    import yaml

    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen or not isinstance(node, yaml.CollectionNode):
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
                    continue
                line, ident = key.start_mark.line + 1, (key.tag, key.value)
                if ident in keys:
                    raise InputError(
                        f"{origin} line {line}: key {_short(key.value)} given twice in one mapping (first on line "
                        f"{keys[ident]}); expected once"
                    )
                keys[ident] = line
        stack.extend(_yaml_children(node))


_MERGE = "tag:yaml.org,2002:merge"
_PLAIN = (dict, list, str, int, float, bool, type(None))


_PLAIN_EXPECTED = "expected text, a number, a boolean, a list or a mapping"


def _check_plain(data: Any, origin: str) -> None:
    """Refuse values JSON has no word for (``!!binary`` bytes, ``!!set``, dates, ``!!omap`` pairs): every
    reader of these files takes text, numbers, booleans, lists and mappings only."""
    stack = [data]
    while stack:
        node = stack.pop()
        if not isinstance(node, _PLAIN):
            shown = f"{type(node).__name__} {_short(node)}"
            raise InputError(f"{origin}: a {shown} value (a YAML tag or a date); {_PLAIN_EXPECTED}")
        if isinstance(node, dict):
            stack.extend(node.values())
            stack.extend(k for k in node if not isinstance(k, str))
        elif isinstance(node, list):
            stack.extend(node)


def _check_yaml_graph(root: yaml.Node, origin: str) -> None:
    """Refuse a composed document that is recursive, nested deeper than ``MAX_DEPTH`` or expands to more than
    ``MAX_YAML_NODES`` nodes. An alias is the node it names, shared, so each collection is measured once
    (iteratively, post-order; a scalar counts one) and a billion laughs costs as many steps as it has lines."""
    import yaml

    size: dict[int, int] = {}
    levels: dict[int, int] = {}
    open_: set[int] = set()  # collections whose subtree is being walked: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, walked = stack.pop()
        key = id(node)
        if walked:
            kids = _yaml_children(node)
            size[key] = min(1 + sum(size.get(id(k), 1) for k in kids), MAX_YAML_NODES + 1)
            levels[key] = 1 + max((levels.get(id(k), 0) for k in kids), default=0)
            open_.discard(key)
        elif key in open_:
            raise InputError(f"{origin}: an alias refers to a node that contains it (a recursive document)")
        elif key not in size:
            open_.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in _yaml_children(node) if isinstance(k, yaml.CollectionNode))
    if levels.get(id(root), 0) > MAX_DEPTH:
        raise InputError(f"{origin}: nested more than {MAX_DEPTH} levels deep")
    if size.get(id(root), 1) > MAX_YAML_NODES:
        raise InputError(
            f"{origin}: expands to more than {MAX_YAML_NODES:,} nodes with its aliases; expected at most that"
        )


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def parse_json(text: str, origin: str) -> Any:
    """JSON text, refused with one line when malformed, nested deeper than ``MAX_DEPTH``, holding an integer
    Python will not parse (over 4,300 digits) or an object that gives one key twice."""
    build = _unique_keys(origin)
    return _parse(lambda: json.loads(text, object_pairs_hook=build), origin, "JSON", json.JSONDecodeError)


def _unique_keys(origin: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A JSON object builder that refuses a key given twice (``json`` keeps the last silently)."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise InputError(f"{origin}: key {_short(key)} given twice in one object; expected once")
            obj[key] = value
        return obj

    return build


def _parse(load: Callable[[], Any], origin: str, kind: str, error: type[Exception]) -> Any:
    try:
        data = load()
    except error as e:
        raise InputError(f"{origin}: not valid {kind} ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{origin}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:  # int() refuses over 4,300 digits (Python's guard against quadratic parsing)
        raise InputError(f"{origin}: {number_problem(e)}") from None
    if depth(data) > MAX_DEPTH:
        raise InputError(f"{origin}: nested more than {MAX_DEPTH} levels deep")
    return data


def number_problem(e: ValueError) -> str:
    """Why a JSON or YAML parser's ``ValueError`` (not a syntax error) refused the text, in words."""
    if "integer string conversion" in str(e):
        return "an integer of more than 4,300 digits; expected a number of at most that many"
    return f"not valid ({str(e).splitlines()[0] if str(e) else type(e).__name__})"


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
