"""An open loop capped at a number of requests in flight (``bench_serving --request-rate R --max-concurrency C``):
each request is sent at its due time or, if C are in flight then, when the next one finishes, in the order
they fall due; its TTFT counts from the send. A cap that never binds leaves the open loop's run."""

import numpy as np
import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.validation import corpus_path, load_yaml_rows
from cloudmatrix.cli.app import app
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.metrics import SimResult
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.studies.validate_run import scenario_for


def _run(arrivals: str, requests: int = 150) -> tuple[Simulation, SimResult]:
    sim = Simulation(load_scenario("cm384-paper", [f"workload.arrivals={arrivals}", f"requests={requests}"]))
    return sim, sim.run()


@pytest.mark.parametrize(("rate", "cap"), [(40.0, 16), (40.0, 1), (3.0, 4), (400.0, 64)])
def test_each_request_is_sent_at_its_due_time_or_when_the_cap_frees_a_slot(rate: float, cap: int) -> None:
    """send_i = max(due_i, the (i - C)-th finish of the run): the closed form of a FIFO semaphore of C slots."""
    sim, result = _run(f"{{kind: poisson, rate_per_s: {rate}, concurrency: {cap}}}")
    due = sim.workload.arrival_s
    assert due is not None
    sent, finish = result.table.arrival_s, result.table.finish_s
    freed = np.sort(finish)
    want = due.copy()
    want[cap:] = np.maximum(due[cap:], freed[: len(due) - cap])
    np.testing.assert_allclose(sent, want, rtol=1e-12, atol=1e-12)
    # never more than the cap in flight, a finish before a send at the same instant
    events = np.concatenate([np.stack([sent, np.ones_like(sent)], 1), np.stack([finish, -np.ones_like(finish)], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    assert np.cumsum(events[:, 1]).max() <= cap
    ttft = result.table.first_token_s - sent
    assert np.all(ttft > 0)  # counted from the send, never from the (earlier) due time


def test_a_cap_that_never_binds_leaves_the_open_loop_run() -> None:
    _, capped = _run("{kind: poisson, rate_per_s: 40, concurrency: 150}")
    _, open_loop = _run("{kind: poisson, rate_per_s: 40}")
    for column in ("first_token_s", "finish_s", "arrival_s"):
        np.testing.assert_allclose(getattr(capped.table, column), getattr(open_loop.table, column), rtol=1e-9)


def test_a_binding_cap_holds_requests_back_at_the_client() -> None:
    """Capped, the run takes longer but no request waits in the server longer than it does uncapped."""
    _, capped = _run("{kind: poisson, rate_per_s: 40, concurrency: 8}")
    _, open_loop = _run("{kind: poisson, rate_per_s: 40}")
    assert capped.sim_time_s > 2 * open_loop.sim_time_s
    ttft = lambda r: np.median(r.table.first_token_s - r.table.arrival_s)  # noqa: E731
    assert ttft(capped) <= ttft(open_loop)


def test_a_benchmark_with_a_rate_and_a_cap_replays_as_both() -> None:
    """SGLang's DeepSeek-V3.2 run on A3: --request-rate 0.25 --max-concurrency 32 (the printout's own lines)."""
    rows = {r.id: r for r in load_yaml_rows(corpus_path("sglang-ascend"))}
    row = rows["sga-v32-w8a8-32c-64k3k"]
    arrivals = scenario_for(row, load_model(row.model), []).workload.arrivals
    assert (arrivals.kind, arrivals.rate_per_s, arrivals.concurrency) == ("poisson", 0.25, 32)
    closed = scenario_for(rows["sga-r1-w8a8-32c-pd-c832"], load_model("deepseek-r1"), []).workload.arrivals
    assert (closed.kind, closed.rate_per_s, closed.concurrency) == ("closed", None, 832)


@pytest.mark.parametrize("cap", ["0", "-3", "2.5", "true"])
def test_a_bad_cap_is_one_line_naming_the_field(cap: str) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--set", f"workload.arrivals={{kind: poisson, rate_per_s: 5, concurrency: {cap}}}"]
    )
    assert result.exit_code == 2, result.output
    assert "concurrency" in result.output and "Traceback" not in result.output
