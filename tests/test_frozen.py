"""fill_dict_init: the same construction as the frozen dataclass's own __init__, the class still frozen."""

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field

import pytest

from cloudmatrix.cost.memory import MemoryUse
from cloudmatrix.cost.step import StepCost
from cloudmatrix.deploy import Plan
from cloudmatrix.deployment import Deployment, Phase
from cloudmatrix.estimate import Estimate
from cloudmatrix.frozen import fill_dict_init


class _Checked:
    rows: float
    checked: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "checked", True)
        if self.rows < 0:
            raise ValueError("rows must be >= 0")


@dataclass(frozen=True, kw_only=True)
class PlainShape(_Checked):
    name: str
    rows: float = 1.0
    tags: list[str] = field(default_factory=list)
    checked: bool = False


@fill_dict_init
@dataclass(frozen=True, kw_only=True)
class FilledShape(_Checked):
    name: str
    rows: float = 1.0
    tags: list[str] = field(default_factory=list)
    checked: bool = False


def _twins() -> tuple[type, type]:
    """The same frozen dataclass twice: with its own __init__, and with fill_dict_init's."""
    return PlainShape, FilledShape


@pytest.mark.parametrize("kwargs", [{"name": "a"}, {"name": "b", "rows": 3.5}, {"name": "c", "tags": ["x"]}])
def test_same_instance_as_the_dataclass_init(kwargs: dict) -> None:
    plain, filled = _twins()
    a, b = plain(**kwargs), filled(**kwargs)
    assert a.__dict__ == b.__dict__ and b.checked
    assert filled(name="z").tags is not filled(name="z").tags  # a factory per instance, as dataclasses do


def test_still_frozen_replaceable_and_picklable() -> None:
    _, filled = _twins()
    made = filled(name="a", rows=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.rows = 3.0  # type: ignore[misc]
    assert dataclasses.replace(made, rows=4.0).rows == 4.0
    assert pickle.loads(pickle.dumps(made)) == made
    deployment = Deployment(phase=Phase.DECODE, num_chips=16, batch_per_chip=8)
    assert (
        hash(deployment) == hash(dataclasses.replace(deployment))
        and pickle.loads(pickle.dumps(deployment)) == deployment
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [((), {}, TypeError), (("a",), {}, TypeError), ((), {"name": "a", "depth": 1}, TypeError)],
)
def test_bad_calls_fail_as_the_dataclass_init_does(args: tuple, kwargs: dict, error: type) -> None:
    plain, filled = _twins()
    for cls in (plain, filled):
        with pytest.raises(error):
            cls(*args, **kwargs)
    with pytest.raises(ValueError, match="rows"):
        filled(name="a", rows=-1.0)  # __post_init__ still runs


def test_refuses_classes_it_cannot_fill() -> None:
    @dataclass(kw_only=True)
    class Mutable:
        x: int = 0

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Slotted:
        x: int = 0

    @dataclass(frozen=True)
    class Positional:
        x: int = 0

    for cls in (Mutable, Slotted, Positional):
        with pytest.raises(TypeError):
            fill_dict_init(cls)


@pytest.mark.parametrize("cls", [Deployment, Plan, StepCost, MemoryUse, Estimate])
def test_signature_of_every_filled_class_is_its_fields(cls: type) -> None:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert p.kind is inspect.Parameter.KEYWORD_ONLY
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty


def test_deployment_checks_still_run() -> None:
    made = Deployment(phase=Phase.DECODE, num_chips=16.0, batch_per_chip=8)  # type: ignore[arg-type]
    assert made.num_chips == 16 and type(made.num_chips) is int
    with pytest.raises(Exception, match="chips"):
        Deployment(phase=Phase.DECODE, num_chips=0)
