"""Wall time of `cloudmatrix validate` over the shipped corpora, and of the CI subset the test suite runs.

Run: python benchmarks/validate.py [--jobs N] [--subset-only]   (targets with --jobs 2 on 2 cores: the full
shipped corpus <= 60 s, the CI subset <= 15 s). Prints the wall time, the CPU seconds of this process and its
workers (the steady figure on a shared machine), rows per second and the five slowest rows (each timed
in-process). The CI subset is the guard's: ``ci-guard.yaml``'s rule over its corpora."""

from __future__ import annotations

import argparse
import resource
import time

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.studies.guard import ci_subset, guard_corpora
from cloudmatrix.studies.validate import run_in_pool
from cloudmatrix.studies.validate_run import run_row


def cpu_s() -> float:
    """CPU seconds of this process and of its finished workers."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(label: str, rows: list, jobs: int | None) -> None:
    start, cpu = time.perf_counter(), cpu_s()
    outcomes = run_in_pool(jobs)(rows, None)
    wall, cpu = time.perf_counter() - start, cpu_s() - cpu
    answered = sum(o.status == "ok" for o in outcomes)
    print(
        f"{label}: {len(rows)} rows ({answered} answered) in {wall:.1f} s wall, {cpu:.1f} CPU s, "
        f"{len(rows) / wall:.2f} rows/s"
    )


def slowest(rows: list, count: int = 5) -> None:
    e2e = [r for r in rows if r.kind == "e2e"]
    for r in sorted(e2e, key=lambda r: (r.workload.num_requests or 0) * r.workload.output_len)[-count:]:
        start, cpu = time.perf_counter(), time.process_time()
        run_row(r)
        print(f"  {time.perf_counter() - start:6.1f} s ({time.process_time() - cpu:.1f} CPU s)  {r.id}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--subset-only", action="store_true")
    args = ap.parse_args()
    rows = load_corpora()
    timed("CI subset", ci_subset(load_corpora(guard_corpora())), args.jobs)
    if not args.subset_only:
        timed("full shipped corpus", rows, args.jobs)
        print("largest rows, one at a time:")
        slowest(rows)
