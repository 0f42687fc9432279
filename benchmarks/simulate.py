"""CPU time, simulated requests per CPU-second, wall time and peak memory of `simulate` on the built-in
cm384-paper scenario.

Run: python benchmarks/simulate.py [N ...]   (default 100000 1000000; target: >= 100,000 requests per
CPU-second at 100k, memory linear in requests). Each size runs in a fresh process so peak RSS is its own;
CPU time, not wall time, is the figure that holds on a shared machine."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

CHILD = """
import json, resource, sys, time
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import load_scenario
t, cpu = time.perf_counter(), time.process_time()
d = simulate(load_scenario(None, [f"requests={sys.argv[1]}"])).to_dict()
print(json.dumps({"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu,
                  "sim_time_s": d["sim_time_s"], "done": d["num_requests"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    for n in sizes:
        r = run(n)
        print(
            f"{n:>9,} requests: {r['cpu_s']:.1f} CPU s ({n / r['cpu_s']:,.0f} requests per CPU-second), "
            f"wall {r['wall_s']:.1f} s (simulated {r['sim_time_s']:.0f} s, {r['done']:,} done), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    _ = resource
