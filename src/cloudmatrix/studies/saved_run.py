"""The rows of a saved ``cloudmatrix validate --json`` run, as the report reads them back: every field the
report uses, typed and bounded, so that a hand-edited file is refused by field rather than failing inside the
report's tables and plots."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from cloudmatrix.catalog.strict import StrictModel


class SavedRow(StrictModel):
    """One row of ``validate --json``'s ``rows`` (fields the report does not read are kept as given)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    id: str
    source: str = ""
    system: str
    model: str
    stack: str | None = None
    role: str
    metric: str
    measured: float = Field(gt=0)
    predicted: float | None = Field(default=None, gt=0)
    error_pct: float | None = None
    status: str
    reason: str = ""
    series: str = ""
    family: str | None = None
    band: str | None = None
    concurrency: int | None = Field(default=None, ge=1)
    mtp: int | None = Field(default=None, ge=0)
    note: str = ""


class SavedCell(StrictModel):
    """One cell of ``validate --json``'s ``summary.cells``: error statistics of one role, group and metric."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    role: str
    grouping: str
    key: str
    metric: str
    rows: int = Field(ge=0)
    answered: int = Field(ge=0)
    median_abs_error_pct: float | None = Field(default=None, ge=0)
    p90_abs_error_pct: float | None = Field(default=None, ge=0)
    max_abs_error_pct: float | None = Field(default=None, ge=0)
    bias_pct: float | None = None
    within_15_pct: float = Field(ge=0, le=100)
    within_25_pct: float = Field(ge=0, le=100)
    answered_share: float = Field(default=0.0, ge=0, le=1)
