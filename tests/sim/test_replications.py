"""`simulate --replications N`: the same summary whatever runs the seeds (this process, a process pool, Ray)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.studies.replications import in_processes, replicate, spread

runner = CliRunner()
SMALL = [
    "--set",
    "requests=300",
    "--set",
    "faults.events=[{at_s: 1, kind: npu_loss, target: decode.0.die.5}]",
    "--fault-policy",
    "elastic-ep",
]


def test_processes_give_this_process_answer_in_seed_order() -> None:
    sc = load_scenario("cm384-die-loss", ["requests=300", "faults.policy=elastic-ep"])
    here = replicate(sc, 3, in_processes(1))  # type: ignore[arg-type]
    pool = replicate(sc, 3, in_processes(2))  # type: ignore[arg-type]
    assert here == pool and here["seeds"] == [0, 2]
    assert len({json.dumps(r) for r in here["runs"]}) == 3  # the seeds differ


def test_spread_is_exact_on_known_figures() -> None:
    s = spread([{"goodput_req_s": 1.0}, {"goodput_req_s": 3.0}, {}])
    assert s == {
        "goodput_req_s": {"mean": 2.0, "std": 2**0.5, "min": 1.0, "p5": 1.1, "p50": 2.0, "p95": 2.9, "max": 3.0}
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--replications", "0"], "--replications: got 0"),
        (["--jobs", "2"], "give --replications N"),
        (["--replications", "2", "--requests-csv", "x.csv"], "reports the spread only"),
    ],
)
def test_replication_flags_are_checked(args: list[str], says: str) -> None:
    res = runner.invoke(app, ["simulate", "cm384-die-loss", *args])
    assert res.exit_code == 2 and says in res.output


@pytest.mark.ray
def test_ray_gives_the_process_pool_answer() -> None:
    pytest.importorskip("ray")
    jobs = str(min(2, os.cpu_count() or 1))
    common = ["simulate", "cm384-die-loss", *SMALL, "--replications", "4", "--jobs", jobs, "--json"]
    local = runner.invoke(app, common)
    distributed = runner.invoke(app, [*common, "--ray"])
    assert local.exit_code == 0 and distributed.exit_code == 0, distributed.output
    a, b = json.loads(local.stdout), json.loads(distributed.stdout)
    assert (a["runner"], b["runner"]) == ("processes", "ray")
    assert a["summary"] == b["summary"] and a["runs"] == b["runs"]
