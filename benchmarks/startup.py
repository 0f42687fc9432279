"""Whole-process CPU seconds (user + system, the operating system's accounting of each finished child) of the
commands people run first: a bare `estimate --json`, `compare` on every system with a preset, and `report`
with its defaults. The median of several runs, since a shared machine is noisy.

Run: python benchmarks/startup.py [--runs 7] [--only estimate]
Targets (issue 21, 2 cores): estimate <= 0.15 s, compare <= 2 s, report <= 3 s of CPU."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

COMMANDS = {
    "estimate": ["estimate", "--json"],
    "compare": ["compare", "--json"],
    "report": ["report", "--json"],  # --out is added per run
}


def cpu_seconds(args: list[str]) -> float:
    """CPU of one finished child process: user + system time from the kernel's accounting."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "cloudmatrix.cli.app", *args], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--only", choices=sorted(COMMANDS), action="append")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; whole-process CPU seconds, median (min-max) of {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(COMMANDS):
            cmd = COMMANDS[name] + (["--out", str(Path(tmp) / "r.html")] if name == "report" else [])
            cpu_seconds(cmd)  # warm-up: bytecode written, files in the page cache
            runs = [cpu_seconds(cmd) for _ in range(args.runs)]
            print(f"{name:9s} {statistics.median(runs):6.3f} s  ({min(runs):.3f}-{max(runs):.3f})")


if __name__ == "__main__":
    main()
