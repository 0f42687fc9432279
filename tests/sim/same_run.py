"""Two simulation results compared to the bit: the request table's states and stamps, the recorded decode steps
and prefill batches, and the result's dictionary (shared by the step-skipping and batched-arrival tests)."""

import json

import numpy as np

from cloudmatrix.sim.metrics import SimResult


def assert_same_run(got: SimResult, want: SimResult) -> None:
    for column in ("state", "generated", *want.table.STAMPS):
        np.testing.assert_array_equal(getattr(got.table, column), getattr(want.table, column))
    assert list(got.recorder.decode_steps) == list(want.recorder.decode_steps)
    assert list(got.recorder.prefill_batches) == list(want.recorder.prefill_batches)
    assert json.dumps(got.to_dict()) == json.dumps(want.to_dict())
