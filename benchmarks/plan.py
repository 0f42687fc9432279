"""Speed of `cloudmatrix plan`: the default search (DeepSeek-R1 on CloudMatrix384, 4K/256, TPOT 50 ms) on
one core, its costing rate (candidates per second of costing alone), the simulation checks of the top 5,
and, when Ray is installed, the same search on 2 local Ray workers with its ranking compared to the
single-process one.

Run: python benchmarks/plan.py [--no-ray]   (target: the whole search incl. 5 checks <= 60 s on one core)"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: no BLAS threads
    os.environ.setdefault(var, "1")
PINNED = hasattr(os, "sched_setaffinity")
ALL_CORES = os.sched_getaffinity(0) if PINNED else set()
if PINNED:  # the single-process figures are for one core (Ray gets the cores back: its workers inherit this)
    os.sched_setaffinity(0, {min(ALL_CORES)})

import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from cloudmatrix.planner.evaluate import cost_candidates  # noqa: E402
from cloudmatrix.planner.inputs import PlanRequest  # noqa: E402
from cloudmatrix.planner.search import CheckChunk, check_path, fast_path  # noqa: E402


def single_process(request: PlanRequest) -> tuple[dict, dict[str, float]]:
    costing_s = 0.0

    def timed_cost(job, candidates, progress):
        nonlocal costing_s
        began = time.perf_counter()
        costs = cost_candidates(job, candidates, progress)
        costing_s += time.perf_counter() - began
        return costs

    started = time.perf_counter()
    result = fast_path(request, cost=timed_cost)
    fast_s = time.perf_counter() - started
    result = check_path(result)
    total_s = time.perf_counter() - started
    times = {"fast_path_s": fast_s, "costing_s": costing_s, "checks_s": total_s - fast_s, "total_s": total_s}
    times["candidates_per_s"] = result.stats.costed / costing_s
    return result.to_dict(), times


def on_ray(request: PlanRequest, workers: int) -> tuple[dict, float, float]:
    from cloudmatrix.planner.ray_sweep import RaySweep, ray_cost

    if PINNED:
        os.sched_setaffinity(0, ALL_CORES)
    started = time.perf_counter()
    sweep = RaySweep(num_cpus=workers)
    ready = time.perf_counter()
    try:
        result = fast_path(request, cost=ray_cost(sweep))
        chunk = CheckChunk(result.workload, result.request)
        result = check_path(result, lambda ds: sweep.map_chunks(chunk, ds))
    finally:
        sweep.close()
    return result.to_dict(), ready - started, time.perf_counter() - ready


def _ranking(d: dict) -> str:
    return json.dumps({k: d[k] for k in ("ranked", "pareto", "best_decode", "search")})


def main() -> None:
    request = PlanRequest()
    d, t = single_process(request)
    s, best = d["search"], d["best_decode"]
    print(f"candidates: {s['enumerated']} enumerated, pruned {s['pruned']}, {s['costed']} costed")
    print(f"one core: {'pinned' if PINNED else 'not pinned (no sched_setaffinity)'}")
    print(
        f"fast path: {t['fast_path_s']:.2f} s, of which costing {t['costing_s']:.2f} s = "
        f"{t['candidates_per_s']:,.0f} candidates/s"
    )
    print(f"simulation checks of the top {len(d['ranked'])}: {t['checks_s']:.2f} s")
    print(f"total: {t['total_s']:.2f} s (target <= 60 s)")
    print(
        f"best decode within TPOT {request.tpot_slo_ms:g} ms: {best['label']} {best['precision']}, "
        f"{best['tok_s_per_chip']:,.0f} tok/s per chip (paper: 1,943)"
    )
    top = d["ranked"][0]
    errors = ", ".join(f"{k} {v:+.1f} %" for k, v in top["check"]["error_pct"].items())
    print(
        f"rank 1: {top['output_tok_s_per_chip']:,.1f} output tok/s per chip on {top['chips']} chips, TPOT "
        f"{top['tpot_ms']:.1f} ms at the cap, {top['tpot_operating_ms']:.1f} ms operating; check: {errors}"
    )
    print(f"flags: {[r['check']['flagged'] for r in d['ranked']]}")
    if "--no-ray" in sys.argv or importlib.util.find_spec("ray") is None:
        print("ray: skipped")
        return
    r, start_s, run_s = on_ray(request, workers=2)
    same = _ranking(r) == _ranking(d)
    print(f"ray (2 local workers): start {start_s:.1f} s, search + checks {run_s:.2f} s, same ranking: {same}")


if __name__ == "__main__":
    main()
