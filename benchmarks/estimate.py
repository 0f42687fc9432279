"""Speed of the analytic path: estimates per CPU-second in-process, and the CLI cold start.

Run: python benchmarks/estimate.py   (targets: >= 5,000 estimates per CPU-second, cold start < 1.5 s)

CPU time, not wall time, so that other work on a shared machine counts less; a loaded machine still
slows it (shared caches), so compare against the parent commit measured in the same minutes."""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import time

from cloudmatrix.catalog.reference import load_reference
from cloudmatrix.deployment import deployment_from_setup
from cloudmatrix.estimate import estimate


def estimates_per_cpu_second(seconds: float = 3.0) -> float:
    ref = load_reference("cloudmatrix-infer")
    row = next(r for r in ref.rows if r.id == "decode-b96-throughput")  # the paper's decode deployment
    base = dataclasses.replace(deployment_from_setup(row.setup, ref.defaults), microbatch=None)
    batches = [8, 16, 24, 32, 48, 64, 96, 112, 128]
    for b in batches:  # warm: the routing samples and kernel-curve lookups are cached per shape
        estimate("cloudmatrix384", "deepseek-r1", dataclasses.replace(base, batch_per_chip=b))
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for b in batches:  # auto microbatch: each estimate prices both graphs (the slower one stops early)
            estimate("cloudmatrix384", "deepseek-r1", dataclasses.replace(base, batch_per_chip=b))
            n += 1
    return n / (time.process_time() - start)


def cold_start_s(runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cloudmatrix.cli.app", "estimate", "--batch-per-chip", "96", "--json"],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times)


if __name__ == "__main__":
    print(f"estimates per CPU-second (decode, auto microbatch): {estimates_per_cpu_second():.0f}")
    print(f"CLI cold start, `estimate --json` (median of 5): {cold_start_s():.2f} s")
