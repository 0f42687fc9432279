"""Speed of the analytic path: estimates per second in-process, and the CLI cold start.

Run: python benchmarks/estimate.py   (targets: >= 200 estimates/s, cold start < 1.5 s)"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import time

from cloudmatrix.catalog.reference import load_reference
from cloudmatrix.deployment import deployment_from_setup
from cloudmatrix.estimate import estimate


def estimates_per_second(seconds: float = 3.0) -> float:
    ref = load_reference("cloudmatrix-infer")
    row = next(r for r in ref.rows if r.id == "decode-b96-throughput")  # the paper's decode deployment
    base = dataclasses.replace(deployment_from_setup(row.setup, ref.defaults), microbatch=None)
    batches = [8, 16, 24, 32, 48, 64, 96, 112, 128]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for b in batches:  # auto microbatch: each estimate prices both graphs
            estimate("cloudmatrix384", "deepseek-r1", dataclasses.replace(base, batch_per_chip=b))
            n += 1
    return n / (time.perf_counter() - start)


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
    print(f"estimates per second (decode, auto microbatch): {estimates_per_second():.0f}")
    print(f"CLI cold start, `estimate --json` (median of 5): {cold_start_s():.2f} s")
