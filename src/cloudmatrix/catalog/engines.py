"""The serving engines' public launch surfaces (``data/engines.yaml``): each engine's launcher, the version
of the docs its flags were read from, and the documented flags and config keys `plan --emit` may write."""

from __future__ import annotations

from functools import cache

from pydantic import Field

from cloudmatrix.catalog.sourced import DATA_DIR, parse, read_yaml
from cloudmatrix.catalog.strict import Frozen
from cloudmatrix.errors import ConfigError

ENGINES_FILE = DATA_DIR / "engines.yaml"


class EngineDoc(Frozen):
    """One engine's documented surface; ``like`` borrows another engine's flag list (vLLM Ascend runs vLLM's)."""

    name: str
    version: str = Field(min_length=1)
    source: str = Field(min_length=1)
    launcher: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    like: str | None = None


class EngineCatalog(Frozen):
    engines: dict[str, EngineDoc]


@cache
def engine_docs() -> dict[str, EngineDoc]:
    """Every engine by id, a ``like`` entry carrying its base engine's flags and keys."""
    docs = parse(EngineCatalog, read_yaml(ENGINES_FILE), str(ENGINES_FILE)).engines
    out = {}
    for engine_id, doc in docs.items():
        if doc.like is not None:
            base = docs.get(doc.like)
            if base is None:
                raise ConfigError(f"{ENGINES_FILE}: engines.{engine_id}.like: unknown engine '{doc.like}'")
            doc = doc.model_copy(update={"flags": base.flags, "keys": base.keys})
        out[engine_id] = doc
    return out


def engine_doc(engine_id: str) -> EngineDoc:
    return engine_docs()[engine_id]
