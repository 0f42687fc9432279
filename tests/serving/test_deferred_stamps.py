"""A request table that logs its transitions and applies them in bulk (``RequestTable.defer``) ends with the
columns of one that applies each as it comes, whatever the batching and wherever the log is flushed; and it
refuses a transition out of order as the live table does (when the log is applied)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.serving import requests
from cloudmatrix.serving.requests import RequestTable

COLUMNS = ("state", "generated", *RequestTable.STAMPS)


def _drive(table: RequestTable, plan: list[tuple[int, int, bool]]) -> None:
    """Take each request through its transitions: ``plan`` holds, per request, how far it goes (1-6 stages),
    when it moves (a group number) and whether it moves alone (the single-request calls) or with its group."""
    stages = (
        ("start_prefill", "start_prefills"),
        ("end_prefill", "end_prefills"),
        ("admit_decode", "admit_decodes"),
        ("start_decode", "start_decodes"),
        ("finish", "finish_later"),
    )
    for rid in range(len(plan)):
        table.arrive(rid, float(rid))
    for stage, (one, many) in enumerate(stages):
        groups: dict[int, list[int]] = {}
        for rid, (reach, group, alone) in enumerate(plan):
            if reach <= stage + 1:
                continue
            now = 10.0 * (stage + 1) + group
            if alone:
                call = getattr(table, one)
                call(np.array([rid]) if one == "finish" else rid, now)
            else:
                groups.setdefault(group, []).append(rid)
        for group, rids in sorted(groups.items()):
            now = 10.0 * (stage + 1) + group
            getattr(table, many)(np.array(rids) if many == "finish_later" else rids, now)
    table.settle()


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(1, 6), st.integers(0, 4), st.booleans()), max_size=40),
    flush_rows=st.integers(1, 50),
)
def test_deferred_transitions_end_as_live_ones(plan: list[tuple[int, int, bool]], flush_rows: int) -> None:
    n = len(plan)
    live, deferred = (RequestTable(np.full(n, 100), np.full(n, 7)) for _ in range(2))
    deferred.defer()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests, "FLUSH_ROWS", flush_rows)
        _drive(live, plan)
        _drive(deferred, plan)
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(deferred, column), getattr(live, column))


def test_a_deferred_transition_out_of_order_is_refused() -> None:
    t = RequestTable(np.array([10, 10]), np.array([5, 5]))
    t.defer()
    t.arrive(0, 0.0)
    t.start_decodes([0], 1.0)  # never prefilled
    with pytest.raises(RuntimeError, match="request 0: DECODING from state 0"):
        t.settle()
    t = RequestTable(np.array([10]), np.array([5]))
    t.defer()
    t.arrive(0, 0.0)
    t.start_prefills([0], 1.0)
    t.start_prefills([0], 2.0)  # twice
    with pytest.raises(RuntimeError, match="twice"):
        t.settle()


@pytest.mark.parametrize("arrived", [0, 2, 4])
def test_a_range_of_arrivals_refuses_one_already_arrived(arrived: int) -> None:
    """``arrive_range`` (open-loop arrivals taken together) checks every request of its range, first to last."""
    t = RequestTable(np.full(5, 10), np.full(5, 5))
    t.arrive(arrived, 0.0)
    with pytest.raises(RuntimeError, match="an arrival from a state other than new"):
        t.arrive_range(0, 5, np.arange(5.0))
    t.arrive_range(arrived + 1, arrived + 1, np.zeros(0))  # an empty range takes nothing
    fresh = RequestTable(np.full(5, 10), np.full(5, 5))
    fresh.arrive_range(0, 5, np.arange(5.0))
    assert fresh.state.tolist() == [0] * 5 and fresh.arrival_s.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 30), max_size=8), backwards=st.booleans(), flush_rows=st.integers(1, 40))
def test_logged_ranges_of_arrivals_end_as_live_ones(cuts: list[int], backwards: bool, flush_rows: int) -> None:
    """Logged ranges of arrivals, following on from each other (joined) or not, then a transition of every
    request: the same columns as the live table's, wherever the log is flushed."""
    n = 30
    bounds = sorted({0, n, *cuts})
    ranges = list(zip(bounds, bounds[1:], strict=False))
    live, deferred = (RequestTable(np.full(n, 100), np.full(n, 7)) for _ in range(2))
    deferred.defer()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests, "FLUSH_ROWS", flush_rows)
        for table in (live, deferred):
            for lo, hi in reversed(ranges) if backwards else ranges:
                table.arrive_range(lo, hi, np.arange(lo, hi) * 0.5)
            table.start_prefills(list(range(n)), 100.0)
            table.settle()
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(deferred, column), getattr(live, column))


@pytest.mark.parametrize("arrived", [0, 2, 4])
def test_a_logged_range_of_arrivals_refuses_one_already_arrived(arrived: int) -> None:
    t = RequestTable(np.full(5, 10), np.full(5, 5))
    t.defer()
    t.arrive(arrived, 0.0)
    t.arrive_range(0, 3, np.arange(3.0))
    t.arrive_range(3, 5, np.arange(3.0, 5.0))  # joined to the first range
    with pytest.raises(RuntimeError, match="an arrival from a state other than new"):
        t.settle()


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 5), min_size=1, max_size=12),
    logged=st.booleans(),
    flush_rows=st.integers(1, 30),
)
def test_finishes_of_steps_at_once_end_as_one_step_at_a_time(counts: list[int], logged: bool, flush_rows: int) -> None:
    """``finish_later_steps`` (the inline decode loop's finishes, logged when the loop ends) leaves the table as
    ``finish_later`` called step by step, with the log on or off and wherever it is flushed."""
    n = sum(counts)
    tables = [RequestTable(np.full(n, 100), np.full(n, 7)) for _ in range(2)]
    rids, times = list(range(n)), [1.5 + 0.25 * k for k in range(len(counts))]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests, "FLUSH_ROWS", flush_rows)
        for table in tables:
            if logged:
                table.defer()
            for rid in rids:
                table.arrive(rid, 0.0)
            for stage in ("start_prefills", "end_prefills", "admit_decodes", "start_decodes"):
                getattr(table, stage)(rids, 1.0)
        one, many = tables
        at = 0
        for count, now in zip(counts, times, strict=True):
            one.finish_later(rids[at : at + count], now)
            at += count
        many.finish_later_steps(rids, times, counts)
        for table in tables:
            table.settle()
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(many, column), getattr(one, column))
