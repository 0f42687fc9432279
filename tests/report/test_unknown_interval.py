"""An unknown interval is never drawn as a bar: the compare figure draws that system hollow with no error bar
(a zero-width bar would read as exact), and the trade-off PNG marks its operating point hollow."""

from typing import Any

import pytest

from cloudmatrix.report.figures import compare_figure


def _system(name: str, value: float, interval: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "system": name,
        "feasible": True,
        "output_tok_s_per_chip": value,
        "output_tok_s_per_system": value * 8,
        "output_tok_s_per_kw": value / 2,
        "output_tok_s_per_musd": value * 3,
        "intervals": {} if interval is None else {"output_tok_s_per_chip": interval},
    }


def _compare(systems: list[dict[str, Any]]) -> dict[str, Any]:
    return {"systems": systems, "model": "m", "workload": {"input_len": 1024, "output_len": 1024}, "tpot_slo_ms": 50}


@pytest.mark.parametrize(
    "unknown",
    [
        None,  # no interval at all
        {"lo": None, "hi": None, "coverage": 0.8, "unknown": True, "note": "unknown: no basis"},
    ],
)
def test_unknown_is_hollow_without_a_bar(unknown: dict[str, Any] | None) -> None:
    known = {"lo": 80.0, "hi": 130.0, "coverage": 0.8}
    fig = compare_figure(_compare([_system("a", 100.0, known), _system("b", 50.0, unknown)]))
    bars = {tuple(t.x): t for t in fig.data}
    assert len(fig.data) == 8  # per panel: the systems with an interval, and those without
    for names, trace in bars.items():
        if names == ("b",):
            assert trace.error_y.visible is False and trace.error_y.array is None
            assert trace.marker.color == "rgba(0,0,0,0)" and trace.marker.line.width == 2
        else:
            assert names == ("a",) and trace.error_y.visible is True
    first = fig.data[0]
    assert (first.error_y.arrayminus[0], first.error_y.array[0]) == (pytest.approx(20.0), pytest.approx(30.0))


def test_every_known_interval_keeps_its_bar() -> None:
    fig = compare_figure(_compare([_system("a", 100.0, {"lo": 90.0, "hi": 120.0, "coverage": 0.8})]))
    assert all(t.error_y.visible for t in fig.data) and len(fig.data) == 4
