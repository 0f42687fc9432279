"""A catalog number with its provenance, and YAML loading (through the parsed-document cache) that turns
schema errors into one clear line. pydantic is imported only where something is validated (a file or an
object not in the caches): the catalog's objects are records (``catalog/record.py``), and the pydantic bases
of the schemas users write into are in ``catalog/strict.py``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cloudmatrix.catalog.object_cache import cached_object
from cloudmatrix.catalog.record import Record, field
from cloudmatrix.catalog.yaml_cache import cached_parse
from cloudmatrix.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError

DATA_DIR = Path(__file__).parent / "data"


class Sourced(Record):
    """A number that carries where it came from; ``assumed`` marks values not backed by a source."""

    value: float
    source: str = field(min_length=1)
    assumed: bool = False

    def __float__(self) -> float:
        return self.value


class Validating(Protocol):
    """A record or a pydantic model: what ``parse`` validates into."""

    @classmethod
    def model_validate(cls, data: Any) -> Any: ...


M = TypeVar("M", bound=Validating)


def describe_validation_error(err: ValidationError) -> str:
    """First pydantic error as ``field.path: message (got value)``."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "<root>"
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
    return f"{path}: {first['msg']}{shown}"


def read_catalog_bytes(path: Path) -> bytes:
    """A catalog file's bytes; a file that cannot be read is a clear error naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def read_yaml(path: Path) -> Any:
    """A catalog YAML file's document (parsed once per content: ``catalog/yaml_cache.py``)."""
    return cached_parse(read_catalog_bytes(path), lambda text: _parse_yaml(text, path))


def parse_file(model: type[M], path: Path) -> M:
    """A shipped catalog file validated into ``model`` (errors name the file and the field path); the result
    is kept per content and catalog code (``catalog/object_cache.py``), so an unchanged file is validated
    once, not in every process."""
    data = read_catalog_bytes(path)
    key = f"{model.__module__}.{model.__qualname__}\0".encode() + data
    return cached_object(key, lambda: parse(model, cached_parse(data, lambda text: _parse_yaml(text, path)), path.name))


def _parse_yaml(text: bytes, path: Path) -> Any:
    import yaml  # only where a file is not in the cache

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's: ~10x faster
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def parse(model: type[M], data: Any, origin: str) -> M:
    """Validate ``data`` into ``model``; errors name the file and the field path."""
    from pydantic import ValidationError  # only where something is validated

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{origin}: {describe_validation_error(e)}") from None
