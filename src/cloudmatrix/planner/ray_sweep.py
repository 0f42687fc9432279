"""Distributed sweeps on Ray (optional: `pip install cloudmatrix[ray]`). Work is cut into chunks in a fixed
order, each chunk runs the same pure function as the single-process path, and the results are put back
in order, so the ranking is identical whatever the number of workers."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cloudmatrix.errors import ConfigError
from cloudmatrix.planner.evaluate import CandidateCost, Job, cost_candidates
from cloudmatrix.planner.search import CostExecutor, Progress
from cloudmatrix.planner.space import Candidate

T = TypeVar("T")
R = TypeVar("R")
CHUNKS_PER_WORKER = 4  # a few chunks per worker balances uneven chunks without much scheduling overhead
PROBE_TIMEOUT_S = 5.0  # ray.init waits long for an address nobody answers at; a TCP probe fails fast


def chunks(items: Sequence[T], count: int) -> list[list[T]]:
    """``items`` cut into at most ``count`` contiguous chunks of near-equal size, in order."""
    count = max(min(count, len(items)), 1)
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return [c for c in out if c]


def probe(address: str) -> None:
    """Fail fast when a ``HOST:PORT`` (or ``ray://HOST:PORT``) address does not accept connections; other
    forms (``auto``) are Ray's to resolve."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


class RaySweep:
    """A Ray connection: a running cluster at ``address``, or a local one of ``num_cpus`` workers."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"--ray-cpus must be at least 1, got {num_cpus}")
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'cloudmatrix[ray]'") from None
        self.ray: Any = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                probe(address)
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = num_cpus
            try:
                ray.init(**kwargs)
            except Exception as e:  # Ray raises ValueError, ConnectionError, RuntimeError… for a bad address
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise ConfigError(
                    f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
        self.workers = max(int(ray.cluster_resources().get("CPU", 1)), 1)

    def map_chunks(
        self, fn: Callable[[list[T]], list[R]], items: Sequence[T], progress: Progress | None = None
    ) -> list[R]:
        """``fn`` over the chunks of ``items`` as Ray tasks; the concatenated results, in item order."""
        remote = self.ray.remote(_apply)
        parts = chunks(items, self.workers * CHUNKS_PER_WORKER)
        refs = [remote.remote(fn, part) for part in parts]
        pending, done = list(refs), 0
        while pending:  # wait only to report progress; results are collected in submission order below
            ready, pending = self.ray.wait(pending, num_returns=1)
            done += sum(len(parts[refs.index(r)]) for r in ready)
            if progress:
                progress(done, len(items))
        return [r for part in self.ray.get(refs) for r in part]

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _apply(fn: Callable[[list[T]], list[R]], part: list[T]) -> list[R]:
    return fn(part)


class _CostChunk:
    """A picklable ``chunk -> costs`` function bound to a job."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, chunk: list[Candidate]) -> list[CandidateCost]:
        return cost_candidates(self.job, chunk)


def ray_cost(sweep: RaySweep) -> CostExecutor:
    """A costing executor for `search.fast_path` that fans the candidates out over ``sweep``."""

    def run(job: Job, candidates: Sequence[Candidate], progress: Progress | None) -> list[CandidateCost]:
        return sweep.map_chunks(_CostChunk(job), candidates, progress)

    return run
