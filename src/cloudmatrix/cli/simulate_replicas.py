"""`simulate --replications N [--jobs J | --ray [--ray-address A]]`: the scenario under N seeds in local
processes or on Ray, and the spread of its figures (studies/replications.py)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cloudmatrix.cli import common as cli


def run_replications(
    scenario: Any, n: int, jobs: int | None, use_ray: bool, address: str | None, as_json: bool
) -> None:
    from cloudmatrix.inputs import check_local_workers
    from cloudmatrix.studies import replications as r

    cli._run(lambda: check_local_workers("--jobs", jobs, address))
    cli._run(lambda: r.seeds_of(scenario, n))
    sweep = None
    if use_ray:
        from cloudmatrix.planner.ray_sweep import RaySweep

        sweep = cli._run(lambda: RaySweep(address, jobs))
    executor = (lambda fn, seeds: sweep.map_chunks(fn, seeds)) if sweep else r.in_processes(jobs)
    try:
        result = cli._run(lambda: r.replicate(scenario, n, executor))
    finally:
        if sweep:
            sweep.close()
    d = {"scenario": scenario.name, "runner": "ray" if sweep else "processes", **result}
    if as_json:
        cli._emit_json(d)
    else:
        cli.out.print(summary_table(d))


def summary_table(d: dict[str, Any]) -> Table:
    lo, hi = d["seeds"]
    t = Table(title=f"simulate {d['scenario']}: {d['replications']} replications (seeds {lo}-{hi})")
    t.add_column("figure")
    for col in ("mean", "std", "p5", "p50", "p95"):
        t.add_column(col, justify="right")
    for name, s in d["summary"].items():
        t.add_row(name, *(f"{s[c]:,.4g}" for c in ("mean", "std", "p5", "p50", "p95")))
    return t
