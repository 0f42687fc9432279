"""Time `cloudmatrix report` on its built-in defaults (every system with a preset, the stored residuals).

Run: python benchmarks/report.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    walls, sizes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"r{i}.html"
            started = time.perf_counter()
            res = subprocess.run(
                [sys.executable, "-m", "cloudmatrix.cli.app", "report", "--out", str(out), "--json"],
                check=True,
                capture_output=True,
                text=True,
            )
            walls.append(time.perf_counter() - started)
            sizes.append(json.loads(res.stdout)["bytes"])
    print(
        f"report: {args.runs} runs, wall median {statistics.median(walls):.1f} s (min {min(walls):.1f}, "
        f"max {max(walls):.1f}; process start and imports included), {sizes[0] / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
