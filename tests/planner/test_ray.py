"""A Ray sweep on two local workers gives exactly the single-process result (skipped without Ray)."""

import json

import pytest

from cloudmatrix.planner.inputs import PlanRequest
from cloudmatrix.planner.ray_sweep import RaySweep, chunks, ray_cost
from cloudmatrix.planner.search import CheckChunk, check_path, fast_path
from cloudmatrix.planner.space import SearchSpace

SPACE = SearchSpace(
    prefill_chips=(16, 32),
    decode_chips=(16, 32, 160),
    batches_per_chip=(32, 64, 96, 128),
    tokens_per_chip=(16384,),
    attention_tp=(1, 4),
    precisions=("int8",),
)


def test_chunks_keep_order() -> None:
    parts = chunks(list(range(10)), 4)
    assert [x for p in parts for x in p] == list(range(10)) and len(parts) == 4
    assert chunks([], 3) == [] and chunks([1], 8) == [[1]]


@pytest.mark.ray
def test_ray_sweep_matches_the_single_process_ranking() -> None:
    pytest.importorskip("ray")
    request = PlanRequest(space=SPACE, top=2, check_requests=1000)
    local = check_path(fast_path(request))
    sweep = RaySweep(num_cpus=2)
    try:
        distributed = fast_path(request, cost=ray_cost(sweep))
        chunk = CheckChunk(distributed.workload, distributed.request)
        distributed = check_path(distributed, lambda ds: sweep.map_chunks(chunk, ds))
    finally:
        sweep.close()
    assert json.dumps(local.to_dict()) == json.dumps(distributed.to_dict())
