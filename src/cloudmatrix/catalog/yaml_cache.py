"""The shipped catalog's YAML files, parsed once per content: the parsed document is kept as JSON in the
user's cache directory under the hash of the file's bytes, so a later command reads it with the JSON parser
(about a tenth of the time) and, when every file it needs is cached, never imports PyYAML. An edited file has
another hash and is parsed afresh; a document JSON cannot hold exactly (a date, an integer key, NaN) is
never cached. Only the catalog's own files come here (user files are parsed, bounded, in ``inputs.py``), and
the cached data is validated by the same schemas as a fresh parse.

``CLOUDMATRIX_CACHE_DIR`` moves the cache (an empty value turns it off); the default is
``$XDG_CACHE_HOME/cloudmatrix`` or ``~/.cache/cloudmatrix``. A cache that cannot be read or written is
skipped without a word: it only ever saves time."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # hashlib's own blake2b, without the OpenSSL library hashlib loads (about 3 ms of a bare estimate)
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it
    from hashlib import blake2b

ENV = "CLOUDMATRIX_CACHE_DIR"
FORMAT = "yaml-json-1"  # part of every key: a change of what is stored starts a fresh cache


def cache_dir() -> Path | None:
    """Where parsed documents are kept, or None when the cache is off."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return Path(chosen) if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cloudmatrix"


def cached_parse(data: bytes, parse: Callable[[bytes], Any]) -> Any:
    """``parse(data)``, or the document a previous parse of the same bytes stored."""
    where = cache_dir()
    if where is None:
        return parse(data)
    entry = where / "yaml" / f"{blake2b(data + FORMAT.encode(), digest_size=20).hexdigest()}.json"
    try:
        return json.loads(entry.read_bytes())
    except (OSError, ValueError):
        pass
    document = parse(data)
    _store(entry, document)
    return document


def _store(entry: Path, document: Any) -> None:
    """Keep ``document`` when JSON gives it back exactly (written whole, then renamed: readers never see part)."""
    try:
        text = json.dumps(document, allow_nan=False)
        if json.loads(text) != document:
            return
        write_entry(entry, text.encode())
    except (OSError, TypeError, ValueError, RecursionError):
        return


def write_entry(entry: Path, data: bytes) -> None:
    """Write a cache entry whole, then rename it into place, so a reader never sees part of one (an OSError
    goes to the caller, for whom a cache that cannot be written only means building again next time)."""
    import tempfile  # only where an entry is written

    entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, entry)
    except BaseException:
        os.unlink(tmp)
        raise
