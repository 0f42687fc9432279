"""pydantic models of the catalog's records (``catalog/record.py``), built when a record first validates: the
same fields, annotations, constraints and checks, on ``catalog/strict.py``'s ``Frozen`` base, and with the
record's class name (an error's path names a union's member by it), so a bad value gets the message a
pydantic class of the record would give. The validated model is then turned into the record."""

from __future__ import annotations

import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import Field, create_model, field_validator, model_validator
from pydantic_core import core_schema

from cloudmatrix.catalog.record_fields import REQUIRED, is_record
from cloudmatrix.catalog.strict import Frozen

R = TypeVar("R")  # a record class (catalog/record.py, which imports this module only when it validates)


class RecordSchema(Frozen):
    """Base of the generated models: a record given where one is expected is validated by its fields."""

    @model_validator(mode="before")
    @classmethod
    def _record_as_fields(cls, data: Any) -> Any:
        return dict(data.__dict__) if isinstance(data, _RECORD_OF.get(cls, ())) else data


_RECORD_OF: dict[type[RecordSchema], type[Any]] = {}
_SCHEMA_OF: dict[type[Any], type[RecordSchema]] = {}


def schema_of(record: type[Any]) -> type[RecordSchema]:
    """The pydantic model that validates ``record`` (made once)."""
    if record not in _SCHEMA_OF:
        _SCHEMA_OF[record] = _make_schema(record)
    return _SCHEMA_OF[record]


def _make_schema(record: type[Any]) -> type[RecordSchema]:
    fields: dict[str, Any] = {}
    for name, annotation in record.field_types().items():
        spec = record.__record_fields__[name]
        options = dict(spec.options)
        if spec.default_factory is not None:
            options["default_factory"] = spec.default_factory
        elif spec.default is not REQUIRED:
            options["default"] = spec.default
        fields[name] = (_schema_type(annotation), Field(**options))
    validators: dict[str, Any] = {}
    for i, fn in enumerate(record.__record_checks__):
        checked: tuple[str, ...] = fn.__record_check__
        validators[f"_check_{i}"] = _validator(fn, checked)
    model = create_model(
        record.__name__,
        __base__=RecordSchema,
        __module__=record.__module__,
        __validators__=validators,
        **fields,
    )
    _RECORD_OF[model] = record
    return model


def _validator(fn: Any, fields: tuple[str, ...]) -> Any:
    if fields:
        return field_validator(*fields)(classmethod(lambda cls, value: fn(value)))

    def whole(self: Any) -> Any:
        fn(self)
        return self

    return model_validator(mode="after")(whole)


def _schema_type(annotation: Any) -> Any:
    """The annotation with every record replaced by its pydantic model."""
    if is_record(annotation):
        return schema_of(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if not args or origin is Literal:
        return annotation
    mapped = tuple(_schema_type(a) for a in args)
    if mapped == args:
        return annotation
    if origin in (Union, types.UnionType):
        return Union[mapped]  # noqa: UP007 - a union built from a tuple of types
    return origin[mapped]


def to_record(value: Any) -> Any:
    """A validated model's value with every generated model turned into its record (containers rebuilt)."""
    kind = type(value)
    record = _RECORD_OF.get(kind)
    if record is not None:
        made = object.__new__(record)
        made.__dict__.update({name: to_record(v) for name, v in value.__dict__.items()})
        return made
    if kind is list:
        return [to_record(v) for v in value]
    if kind is tuple:
        return tuple(to_record(v) for v in value)
    if kind is dict:
        return {k: to_record(v) for k, v in value.items()}
    return value


def validate(record: type[R], data: Any) -> R:
    """``data`` validated into ``record`` (``pydantic.ValidationError`` when it does not fit)."""
    made: R = to_record(schema_of(record).model_validate(data))
    return made


def core_schema_of(record: type[Any], handler: Any) -> Any:
    """The schema of a record inside another pydantic model: validated by its model, kept as the record."""
    return core_schema.no_info_after_validator_function(
        to_record,
        handler.generate_schema(schema_of(record)),
        serialization=core_schema.plain_serializer_function_ser_schema(lambda r: r.model_dump()),
    )
