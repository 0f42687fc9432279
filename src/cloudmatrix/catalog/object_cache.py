"""Catalog objects kept once validated: what the catalog's schemas built from a shipped file is pickled in the
user's cache directory (the one of ``catalog/yaml_cache.py``) under a hash of the file's bytes and of the code
that decides the result, so a later command loads the same objects without importing pydantic or validating
again (they are records, ``catalog/record.py``). An edited file, or edited catalog code, has another hash: it
is validated afresh, and its errors are reported as on a first run (failures are never kept). An object that
code outside the catalog derives (an interval's indexed table) has that code's source in its key.

Like Python's own bytecode cache, an entry is code the process runs; so one is loaded only when the user
running the command owns it and no one else may write it. A cache that cannot be read or written is skipped
without a word: it only ever saves time."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import cache
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, TypeVar

from cloudmatrix.catalog.yaml_cache import blake2b, cache_dir, write_entry

try:  # pickle's reader itself, without the pure-Python pickler module around it (about 1 ms of a bare estimate)
    from _pickle import load
except ImportError:
    from pickle import load

FORMAT = b"catalog-objects-2"  # part of every key: a change of what is stored starts a fresh cache
T = TypeVar("T")
_MISSING = object()

# The modules whose code decides a validated catalog object: the catalog's own and the layer-0 modules they
# import (imports point downward only, so nothing else can change one; tests/catalog checks the list).
LOWER_MODULES = ("csv_input.py", "errors.py", "inputs.py", "units.py")


@cache
def code_key() -> bytes | None:
    """A hash of the catalog's code, of the layer-0 code it uses, and of pydantic's and Python's versions
    (None when the sources cannot be read, e.g. from a zipped install: then nothing is cached)."""
    here = Path(__file__).parent
    paths = sorted(here.glob("*.py")) + [here.parent / name for name in LOWER_MODULES]
    digest = blake2b(FORMAT + sys.version.encode(), digest_size=20)
    try:
        digest.update(_pydantic_version_file())
        for path in paths:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    except OSError:
        return None
    return digest.digest()


def _pydantic_version_file() -> bytes:
    """pydantic's ``version.py`` (its version and pydantic-core's), read without importing pydantic: the
    objects kept are records, and pydantic is imported only where something is validated."""
    spec = PathFinder.find_spec("pydantic")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("pydantic not found")
    return (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_bytes()


def cached_object(key: bytes, build: Callable[[], T]) -> T:
    """``build()``, or the object a previous ``build()`` for the same ``key`` (the bytes of every input it
    reads, and what it is asked for) and the same catalog code kept."""
    where, code = cache_dir(), code_key()
    if where is None or code is None:
        return build()
    entry = where / "objects" / f"{blake2b(key + code, digest_size=20).hexdigest()}.pickle"
    found = _load(entry)
    if found is not _MISSING:
        return found
    made = build()
    _store(entry, made)
    return made


def _load(entry: Path) -> Any:
    """The kept object, or _MISSING when there is none that this user alone could have written."""
    try:
        with open(entry, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return _MISSING
            return load(f)
    except Exception:  # noqa: BLE001 - a missing, partial or stale entry only means building afresh
        return _MISSING


def _store(entry: Path, made: object) -> None:
    """Keep ``made`` when pickling gives an equal object back (written whole, then renamed)."""
    import pickle  # only where an entry is written

    try:
        data = pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL)
        if pickle.loads(data) != made:
            return
        write_entry(entry, data)
    except Exception:  # noqa: BLE001 - an object that cannot be kept is simply built next time
        return
