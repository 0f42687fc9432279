"""The pydantic bases of every schema users write into (catalog, configs, scenarios, workloads, API bodies,
saved runs), and of the schemas that validate the catalog's records (``catalog/record_schema.py``). Importing
this module imports pydantic: the catalog's value objects themselves are ``catalog/record.py``'s records."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from cloudmatrix.inputs import refuse_flag_as_number


class StrictModel(BaseModel):
    """``true``/``false`` is no number (pydantic's lax mode reads them as 1 and 0). Each schema is built when it
    first validates, not when its class is made: a command builds only the schemas it uses."""

    model_config = ConfigDict(defer_build=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_flags_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return refuse_flag_as_number(field.annotation if field else Any, value)


class Frozen(StrictModel):
    """Base for catalog value objects: immutable, unknown keys rejected so typos are caught."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)
