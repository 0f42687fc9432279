"""The report's fault section (`report --scenario` / `--simulation-json`, when the run has faults): decode
throughput over the simulated run with each fault, the end of its pause and its return to full capacity
marked (the interactive counterpart of `simulate --fault-plot`), and the fault table. A saved run is checked
field by field before it reaches the page (a hand-edited file must not put text where a number goes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
from pydantic import ConfigDict, Field, ValidationError

from cloudmatrix.catalog.sourced import describe_validation_error
from cloudmatrix.catalog.strict import StrictModel
from cloudmatrix.errors import ConfigError

MAX_POINTS = 100_000  # a saved series longer than this is no run `simulate` wrote (it bins to 2,000)
MAX_EVENTS = 10_000
MARKS = (("at_s", "fault", "#d62728", "solid"), ("resume_at_s", "serving again", "#ff7f0e", "dash"))
FULL = ("full_capacity_at_s", "full capacity", "#2ca02c", "dot")


class _Saved(StrictModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


class SavedFaultEvent(_Saved):
    at_s: float = Field(ge=0)
    kind: str = Field(max_length=32)
    pool: str = Field(default="decode", max_length=16)
    instance: int = Field(ge=0)
    policy: str = Field(max_length=32)
    pause_s: float = Field(ge=0)
    resume_at_s: float = Field(ge=0)
    degraded_fraction: float = Field(ge=0, le=1)
    full_capacity_at_s: float | None = Field(default=None, ge=0)
    back_to_95pct_s: float | None = Field(default=None, ge=0)
    cut: int = Field(ge=0)


class SavedSeries(_Saved):
    bin_s: int = Field(ge=1)
    values: list[float] = Field(max_length=MAX_POINTS)


class SavedFaults(_Saved):
    policy: str = Field(max_length=32)
    availability: float = Field(ge=0, le=1)
    events: list[SavedFaultEvent] = Field(max_length=MAX_EVENTS)
    decode_tok_s_series: SavedSeries


def fault_data(run: Any, origin: str) -> dict[str, Any] | None:
    """The fault part of a `simulate --json` result, checked; None when the run has no faults."""
    if not isinstance(run, dict) or not isinstance(run.get("scenario", ""), str):
        raise ConfigError(f"{origin}: expected the object `cloudmatrix simulate --json` prints")
    if run.get("faults") is None:
        return None
    try:
        faults = SavedFaults.model_validate(run["faults"])
    except ValidationError as e:
        raise ConfigError(f"{origin}: faults.{describe_validation_error(e)}") from None
    return {"scenario": str(run.get("scenario", ""))[:200]} | faults.model_dump()


def fault_figure(f: dict[str, Any]) -> go.Figure:
    series = f["decode_tok_s_series"]
    width = series["bin_s"]
    fig = go.Figure(
        go.Scatter(
            x=[i * width for i in range(len(series["values"]))],
            y=series["values"],
            mode="lines",
            name="decode tok/s",
            hovertemplate="%{x:,} s: %{y:,.0f} tok/s<extra></extra>",
        )
    )
    for n, e in enumerate(f["events"]):
        marks = [*MARKS, FULL] if e.get("full_capacity_at_s") is not None else list(MARKS)
        for key, label, colour, dash in marks:
            fig.add_trace(
                go.Scatter(
                    x=[e[key], e[key]],
                    y=[0, max(series["values"], default=0.0)],
                    mode="lines",
                    line={"color": colour, "dash": dash, "width": 1},
                    name=label,
                    legendgroup=label,
                    showlegend=n == 0,
                    hovertemplate=f"{label}: %{{x:,.1f}} s ({e['kind']} on {e['pool']}.{e['instance']})<extra></extra>",
                )
            )
    fig.update_layout(
        template="plotly_white",
        title=f"{f['scenario']}: {f['policy']} (availability {f['availability']:.2%})",
        height=420,
        xaxis_title="simulated time (s)",
        yaxis_title="decode tokens / s (whole pool)",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    return fig


def fault_section(
    f: dict[str, Any], table: Callable[..., str], figure: Callable[[go.Figure, str], str]
) -> tuple[str, str, str]:
    """(section id, title, html): the figure and one row per fault."""
    headers = ["at (s)", "kind", "target", "policy", "pause (s)", "degraded capacity", "back to 95 % (s)", "cut"]
    rows = [
        [
            e["at_s"],
            e["kind"],
            f"{e['pool']}.{e['instance']}",
            e["policy"],
            e["pause_s"],
            e["degraded_fraction"],
            e["back_to_95pct_s"],
            e["cut"],
        ]
        for e in f["events"]
    ]
    specs = [",.1f", "", "", "", ",.2f", ".2%", ",.0f", ",d"]
    note = (
        "<p class='note'>Decode throughput of the simulated run, binned; red: a fault, orange: the instance "
        "serves again, green: the repaired dies are back. Availability is the decode capacity delivered "
        "over the run as a share of the healthy pool's.</p>"
    )
    return (
        "faults",
        "Faults over a simulated run",
        note + figure(fault_figure(f), "fig-faults") + table(headers, rows, specs),
    )
