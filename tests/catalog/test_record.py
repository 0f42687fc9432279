"""The catalog's records (catalog/record.py): validated exactly as a pydantic class with the same fields would
be (the same values, the same one-line errors), behaving as pydantic's frozen models did (equality, hashing,
repr, copies, pickling), and made or unpickled without importing pydantic."""

import json
import pickle
import subprocess
import sys
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError, field_validator, model_validator

from cloudmatrix.catalog import hardware, kernel_shapes, kernels, reference, routing, sourced, stacks
from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.record import REQUIRED, Record, check, field
from cloudmatrix.catalog.record_schema import schema_of
from cloudmatrix.catalog.sourced import Sourced, parse
from cloudmatrix.catalog.strict import Frozen
from cloudmatrix.errors import ConfigError


# A record using every feature the catalog's do (a nested record, a union of records, constraints, an alias,
# a default factory, a field check and a whole-object check) and the pydantic class a developer would write.
class Part(Record):
    value: float
    source: str = field(min_length=1)


class Like(Record):
    like: str = field(pattern=r"^[a-z]+/[a-z]+$")


class Whole(Record):
    name: str
    kind: Literal["a", "b"] = "a"
    count: int = field(default=1, ge=1)
    share: Part | None = None
    parts: dict[str, Part | Like] = field(default_factory=dict)
    points: list[tuple[float, float]] = field(default_factory=list, max_length=3)
    flag: bool = False
    renamed: str | None = field(default=None, alias="alias")

    @staticmethod
    @check("share")
    def _a_share(v: Part | None) -> Part | None:
        if v is not None and not 0 <= v.value <= 1:
            raise ValueError(f"share must be 0 to 1, got {v.value}")
        return v

    @staticmethod
    @check()
    def _b_needs_parts(w: "Whole") -> None:
        if w.kind == "b" and not w.parts:
            raise ValueError("kind b needs parts")


class PartModel(Frozen):
    value: float
    source: str = Field(min_length=1)


class LikeModel(Frozen):
    like: str = Field(pattern=r"^[a-z]+/[a-z]+$")


class WholeModel(Frozen):
    name: str
    kind: Literal["a", "b"] = "a"
    count: int = Field(default=1, ge=1)
    share: PartModel | None = None
    parts: dict[str, PartModel | LikeModel] = Field(default_factory=dict)
    points: list[tuple[float, float]] = Field(default_factory=list, max_length=3)
    flag: bool = False
    renamed: str | None = Field(default=None, alias="alias")

    @field_validator("share")
    @classmethod
    def _a_share(cls, v: PartModel | None) -> PartModel | None:
        if v is not None and not 0 <= v.value <= 1:
            raise ValueError(f"share must be 0 to 1, got {v.value}")
        return v

    @model_validator(mode="after")
    def _b_needs_parts(self) -> "WholeModel":
        if self.kind == "b" and not self.parts:
            raise ValueError("kind b needs parts")
        return self


# pydantic names a union's member by its class name in an error's path, as it does for the records' models
PartModel.__name__, LikeModel.__name__ = "Part", "Like"
WholeModel.model_rebuild(force=True)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "a", "b", "q/r", "1.5"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["value", "source", "like", "zz"]), inner, max_size=3),
    ),
    max_leaves=8,
)
parts = st.one_of(
    st.fixed_dictionaries({"value": st.floats(0, 2) | scalars, "source": st.sampled_from(["s", ""])}),
    st.fixed_dictionaries({"like": st.sampled_from(["a/b", "a-b", "x"])}),
    values,
)
wholes = st.fixed_dictionaries(
    {"name": st.just("n")},  # a bad name is one case of the list below
    optional={
        "kind": st.sampled_from(["a", "b", "c"]) | scalars,
        "count": st.integers(-1, 3) | scalars,
        "share": parts,
        "parts": st.dictionaries(st.sampled_from(["x", "y"]), parts, max_size=2) | values,
        "points": st.lists(st.tuples(st.floats(0, 9), st.floats(0, 9)), max_size=4) | values,
        "flag": st.booleans() | scalars,
        "alias": st.just("r") | scalars,
        "renamed": st.just("r"),
        "extra": scalars,
    },
)


def _outcome(model: Any, data: Any) -> str:
    try:
        made = parse(model, data, "f.yaml")
    except ConfigError as e:
        return str(e)
    return json.dumps(made.model_dump(), default=str)


@settings(max_examples=400, deadline=None)
@given(data=wholes)
def test_a_record_validates_as_the_pydantic_class_with_its_fields(data: dict[str, Any]) -> None:
    assert _outcome(Whole, data) == _outcome(WholeModel, data)


@pytest.mark.parametrize(
    "data",
    [
        {"name": "n", "share": {"value": 0.5, "source": "s"}, "parts": {"x": {"like": "a/b"}, "y": {"value": 1}}},
        {"name": "n", "kind": "b"},
        {"name": "n", "share": {"value": 2, "source": "s"}},
        {"name": "n", "count": True},
        {"name": "n", "points": [[1, 2], [3, 4], [5, 6], [7, 8]]},
        {"name": "n", "alias": "r", "flag": True},
        {"name": "n", "renamed": "r"},
        {"name": True},
        {},
    ],
)
def test_the_catalogs_kinds_of_error_are_pydantics(data: dict[str, Any]) -> None:
    assert _outcome(Whole, data) == _outcome(WholeModel, data)


RECORDS = [
    cls
    for module in (hardware, stacks, kernels, kernel_shapes, reference, routing, sourced)
    for cls in vars(module).values()
    if isinstance(cls, type) and issubclass(cls, Record) and cls is not Record and cls.__module__ == module.__name__
]


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_every_catalog_record_has_a_model_with_its_fields(cls: type[Record]) -> None:
    model = schema_of(cls)
    assert model.__name__ == cls.__name__
    assert list(model.model_fields) == list(cls.__record_fields__) == list(cls.field_types())
    for name, info in model.model_fields.items():
        spec = cls.__record_fields__[name]
        assert info.alias == spec.options.get("alias"), name
        assert info.is_required() == (spec.default is REQUIRED and spec.default_factory is None), name


def test_a_record_behaves_as_a_frozen_pydantic_model() -> None:
    s = Sourced(value=1, source="s")
    assert s.value == 1.0 and isinstance(s.value, float) and not s.assumed  # coerced and defaulted as pydantic
    assert repr(s) == "Sourced(value=1.0, source='s', assumed=False)" and float(s) == 1.0
    assert s == Sourced(value=1.0, source="s") and hash(s) == hash(Sourced(value=1.0, source="s"))
    assert s != Sourced(value=1.0, source="t") and s != PartModel(value=1.0, source="s")
    with pytest.raises(AttributeError, match="frozen"):
        s.value = 2.0  # type: ignore[misc]
    copied = s.model_copy(update={"value": 3.0})
    assert copied.value == 3.0 and s.value == 1.0 and copied.source == "s"
    assert pickle.loads(pickle.dumps(s)) == s
    hw = load_hardware("cloudmatrix384")
    assert pickle.loads(pickle.dumps(hw)) == hw and hw.model_copy() == hw and hw.model_copy() is not hw
    assert Sourced.model_construct(value=2.0, source="x") == Sourced(value=2.0, source="x")
    for bad in ({"value": True, "source": "s"}, {"value": 1, "source": ""}, {"value": 1, "source": "s", "x": 1}):
        with pytest.raises(ValidationError):
            Sourced(**bad)


def test_a_records_dump_validates_back_to_it() -> None:
    hw = load_hardware("cloudmatrix384")
    assert type(hw).model_validate(hw.model_dump()) == hw
    assert type(hw)(system=hw.system, chip=hw.chip) == hw  # records given where records are expected
    assert json.loads(hw.chip.model_dump_json()) == json.loads(json.dumps(hw.chip.model_dump()))
    for curve in kernels.curves()[:5]:
        assert kernels.KernelCurve.model_validate(curve.model_dump()) == curve
    assert stacks.load_stack("vllm").model_copy(update={"name": "v"}).name == "v"


def test_records_are_made_and_unpickled_without_pydantic() -> None:
    code = """
import builtins, pickle, sys
from cloudmatrix.catalog import stacks
from cloudmatrix.catalog.hardware import load_hardware
hw = load_hardware("cloudmatrix384")  # validated or from the cache: kept either way
stacks.load_stack("vllm")
stacks._catalog.cache_clear()
data = pickle.dumps(hw)
for name in [m for m in sys.modules if m.startswith(("pydantic", "cloudmatrix.catalog.record_schema"))]:
    del sys.modules[name]
real = builtins.__import__
def refuse(name, *args, **kwargs):
    assert not name.startswith("pydantic"), name
    return real(name, *args, **kwargs)
builtins.__import__ = refuse
assert pickle.loads(data) == hw
print(stacks.load_stack("vllm").model_copy().id)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "vllm"
