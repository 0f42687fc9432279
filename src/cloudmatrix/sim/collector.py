"""Python's cycle collector paused while a whole run goes (`gc.disable`, restored after, however the run ends).

A run allocates millions of short-lived containers (event tuples, recorded rows, per-batch lists) that
reference counting frees at once; nearly none is in a cycle (about twenty objects a 100,000-request run).
The collector's generation-0 passes triggered by those allocations walk the young objects every few hundred
allocations all the same: about 8 % of a run's CPU time (measured: docs/speed.md, eighth pass). Paused, the
run is unchanged to the bit; any cycle it made is collected once the collector is back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(pause: bool = True) -> Iterator[None]:
    """Pause the cycle collector inside the block when ``pause`` (and it was on); switch it back on after."""
    was_on = pause and gc.isenabled()
    if was_on:
        gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
