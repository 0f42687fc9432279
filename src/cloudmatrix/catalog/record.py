"""The catalog's value objects without pydantic: a ``Record`` is an immutable object of typed fields that is made
and unpickled without importing pydantic (pydantic and its schemas cost more CPU than the rest of a bare
estimate, whose catalog objects come from the object cache, ``catalog/object_cache.py``).

pydantic still decides every value: ``Record(**data)``, ``model_validate`` and a shipped file's first read
validate through a pydantic model built from the record's annotations, constraints (``field``) and checks
(``check``) when the record first validates (``catalog/record_schema.py``), so the error messages are
pydantic's, as they were. A record offers the part of pydantic's model interface the catalog's users call:
``model_copy``, ``model_dump``, ``model_dump_json``, ``model_construct``, ``model_validate``, equality, hashing,
``repr``; ``field_types`` gives the fields' resolved annotations (what-if overrides walk them)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, dataclass_transform, get_type_hints

from cloudmatrix.catalog.record_fields import REQUIRED, FieldSpec, check, field

__all__ = ["REQUIRED", "FieldSpec", "Record", "check", "field"]

R = TypeVar("R", bound="Record")


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
class Record:
    """Base of the catalog's value objects: frozen, unknown keys refused, ``true``/``false`` no number (the
    rules of ``catalog/strict.py``'s pydantic ``Frozen``, which validates them)."""

    __record_fields__: ClassVar[dict[str, FieldSpec]] = {}
    __record_checks__: ClassVar[tuple[Callable[..., Any], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Collect the fields (annotations, in order, a base's first) and checks; no code is generated."""
        super().__init_subclass__(**kwargs)
        fields = dict(cls.__record_fields__)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            value = cls.__dict__.get(name, REQUIRED)
            fields[name] = value if isinstance(value, FieldSpec) else FieldSpec(value, None, {})
            if isinstance(value, FieldSpec):
                delattr(cls, name)
        cls.__record_fields__ = fields
        found = (getattr(f, "__func__", f) for f in cls.__dict__.values())
        own = tuple(f for f in found if hasattr(f, "__record_check__"))
        cls.__record_checks__ = cls.__record_checks__ + own

    def __init__(self, **data: Any) -> None:
        """Validated like a pydantic model (``pydantic.ValidationError`` on bad data)."""
        from cloudmatrix.catalog.record_schema import validate  # pydantic: only where something is validated

        object.__setattr__(self, "__dict__", validate(type(self), data).__dict__)

    @classmethod
    def model_validate(cls: type[R], data: Any) -> R:
        from cloudmatrix.catalog.record_schema import validate  # pydantic: only where something is validated

        return validate(cls, data)

    @classmethod
    def model_construct(cls: type[R], **values: Any) -> R:
        """A record of already-valid values (defaults filled in), not validated."""
        made = object.__new__(cls)
        state = made.__dict__
        for name, spec in cls.__record_fields__.items():
            if name not in values and spec.default is REQUIRED and spec.default_factory is None:
                raise TypeError(f"{cls.__name__}.model_construct: field {name} is required")
            state[name] = values[name] if name in values else spec.make_default()
        return made

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Each field's annotation, resolved in the record's module (records as their classes)."""
        if "__record_types__" not in cls.__dict__:
            hints = get_type_hints(cls, include_extras=True)
            type.__setattr__(cls, "__record_types__", {name: hints[name] for name in cls.__record_fields__})
        types: dict[str, Any] = cls.__dict__["__record_types__"]
        return types

    def model_copy(self: R, *, update: Mapping[str, Any] | None = None) -> R:
        """A shallow copy with ``update``'s fields replaced, not validated (as pydantic's)."""
        made = object.__new__(type(self))
        made.__dict__.update(self.__dict__)
        if update:
            made.__dict__.update(update)
        return made

    def model_dump(self) -> dict[str, Any]:
        """The fields as plain data: records as dicts, containers copied."""
        return {name: _dump(value) for name, value in self.__dict__.items()}

    def model_dump_json(self) -> str:
        return json.dumps(self.model_dump(), separators=(",", ":"))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __str__(self) -> str:
        return " ".join(f"{k}={v!r}" for k, v in self.__dict__.items())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name}")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A record as a field of a pydantic model (``catalog/tco.py``'s sourced numbers)."""
        from cloudmatrix.catalog.record_schema import core_schema_of

        return core_schema_of(cls, handler)


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_dump(v) for v in value)
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value
