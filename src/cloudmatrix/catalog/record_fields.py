"""The declarations a catalog record is written with (``catalog/record.py``) and its validating schema
(``catalog/record_schema.py``) reads: a field's default and pydantic ``Field`` options, and the checks run after
validation. Below both, so neither imports the other at the top."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
REQUIRED: Any = object()  # a field without a default


class FieldSpec:
    """A field's default and the pydantic ``Field`` arguments (constraints, alias) its schema is built with."""

    __slots__ = ("default", "default_factory", "options")

    def __init__(self, default: Any, default_factory: Callable[[], Any] | None, options: dict[str, Any]) -> None:
        self.default, self.default_factory, self.options = default, default_factory, options

    def make_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        return copy.deepcopy(self.default) if isinstance(self.default, list | dict | set) else self.default


def field(default: Any = REQUIRED, *, default_factory: Callable[[], Any] | None = None, **options: Any) -> Any:
    """A record field with pydantic ``Field`` options (``gt``, ``ge``, ``min_length``, ``pattern``, ``alias``,
    ``description``…), applied when the record validates."""
    return FieldSpec(default, default_factory, options)


def check(*fields: str) -> Callable[[F], F]:
    """Mark a static function as a check run after pydantic validates the record: with field names, it takes
    and returns one validated field value; without, it takes the validated object (its fields as attributes).
    Either raises ``ValueError`` for an error message pydantic reports with the field path."""

    def mark(fn: F) -> F:
        fn.__record_check__ = fields  # type: ignore[attr-defined]
        return fn

    return mark


def is_record(annotation: Any) -> bool:
    """Whether ``annotation`` is a record class (it carries the fields its base collects)."""
    return isinstance(annotation, type) and hasattr(annotation, "__record_fields__")
