"""Shared helpers of the golden tests: one parametrised case per published row, strict xfails for the rows
a model is known to miss (the measured error is the reason, so a fix surfaces as an XPASS)."""

import pytest


def row_params(row_ids: list[str], known_misses: dict[str, str]) -> list:
    return [
        pytest.param(
            r, marks=[pytest.mark.xfail(strict=True, reason=known_misses[r])] if r in known_misses else [], id=r
        )
        for r in row_ids
    ]
