"""The request state machine, kept as columns (one array per timestamp) so a million requests stay cheap:
queued → prefilling → kv transfer → decoding → done. Transitions take ``now`` and enforce the order.
``generated`` counts a request's tokens once its prefill is done and once it finishes; in between, the
decode batch holds the count (``DecodeBatch.remaining``) and the simulation copies it in when asked."""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from cloudmatrix.errors import InfeasibleDeploymentError


class State(IntEnum):
    QUEUED = 0
    PREFILLING = 1
    KV_TRANSFER = 2
    DECODING = 3
    DONE = 4
    CANCELLED = 5  # the client went away; its resources were freed


# Plain ints for the hot path (IntEnum member access is slow in a million-request run).
_NEW, _QUEUED, _PREFILLING, _KV, _DECODING, _DONE, _CANCELLED = -1, 0, 1, 2, 3, 4, 5

# The transitions after arrival, in the order a request takes them: (state before, state after, stamp).
_STAGES = (
    (_QUEUED, _PREFILLING, "prefill_start_s"),
    (_PREFILLING, _KV, "prefill_end_s"),
    (_KV, _KV, "decode_admit_s"),
    (_KV, _DECODING, "first_token_s"),
    (_DECODING, _DONE, "finish_s"),
)
_START_PREFILL, _END_PREFILL, _ADMIT, _START_DECODE, _FINISH = range(len(_STAGES))
FLUSH_ROWS = 1 << 16  # deferred transitions applied at a time (bounds the log to about a MB)


class RequestTable:
    """Per-request columns. Timestamps are NaN until reached."""

    STAMPS = ("arrival_s", "prefill_start_s", "prefill_end_s", "decode_admit_s", "first_token_s", "finish_s")

    def __init__(self, input_len: np.ndarray, output_len: np.ndarray) -> None:
        n = len(input_len)
        self.n = n
        self.input_len = np.asarray(input_len, dtype=np.int64)
        self.output_len = np.asarray(output_len, dtype=np.int64)
        self.state = np.full(n, -1, dtype=np.int8)  # -1: not yet arrived
        self.generated = np.zeros(n, dtype=np.int64)
        self.arrival_s, self.prefill_start_s, self.prefill_end_s = (np.full(n, np.nan) for _ in range(3))
        self.decode_admit_s, self.first_token_s, self.finish_s = (np.full(n, np.nan) for _ in range(3))
        self.free: list[int] = []  # rows of finished online requests, reused by append
        self.log: list[tuple[list[int], list[float], list[int]]] | None = None  # deferred transitions per stage
        self.logged = 0
        self.arriving: list[np.ndarray] = []  # logged arrival times of requests [arrived_from, arrived_to)
        self.arrived_from = self.arrived_to = 0

    def defer(self) -> None:
        """From now on the transitions after arrival (and ranges of arrivals) are logged and applied in bulk, in
        their order, when the log grows long and at ``settle``, with the same checks: for a whole run that
        nothing reads until it ends (a transition's few numpy calls cost more than the step that caused it)."""
        self.log = [([], [], []) for _ in _STAGES]

    def _defer(self, stage: int, rids: list[int], now: float) -> None:
        """Log ``rids`` taking transition ``stage`` at ``now``."""
        assert self.log is not None
        ids, times, counts = self.log[stage]
        ids.extend(rids)
        times.append(now)
        counts.append(len(rids))
        self.logged += len(rids)
        if self.logged >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Apply the logged transitions, stage by stage (a request's are logged in its order, so each stage
        finds the state the one before left), checking each as the transition itself would."""
        if self.log is None:
            return
        if self.arriving:  # a request's arrival comes before its other transitions
            self._arrive_logged()
        for stage, (ids, times, counts) in enumerate(self.log):
            if not counts:
                continue
            at = np.fromiter(ids, np.int64, len(ids))
            expected, new, column = _STAGES[stage]
            wrong = self.state[at] != expected
            if wrong.any():
                bad = int(at[wrong.argmax()])
                raise RuntimeError(f"request {bad}: {State(new).name} from state {self.state[bad]}")
            if np.bincount(at - at.min()).max() > 1:  # (requests reach a stage in about their order: a short range)
                raise RuntimeError(f"a request took the transition to {State(new).name} twice")
            self.state[at] = new
            getattr(self, column)[at] = np.repeat(times, counts)
            if stage == _END_PREFILL:
                self.generated[at] = 1
            elif stage == _FINISH:
                self.generated[at] = self.output_len[at]
            del ids[:], times[:], counts[:]
        self.logged = 0

    def recycle(self, rid: int) -> None:
        """Row ``rid`` is finished with (online serving): ``append`` may give it to a new request."""
        if self.state[rid] not in (_DONE, _CANCELLED):
            raise RuntimeError(f"request {rid}: recycled in state {self.state[rid]}")
        self.free.append(rid)

    def __len__(self) -> int:
        return self.n

    def append(self, input_len: int, output_len: int) -> int:
        """Add a request (online serving) in a recycled row, else a new one; columns grow by doubling.
        Returns its row."""
        if self.free:
            rid = self.free.pop()
            self.input_len[rid], self.output_len[rid], self.state[rid], self.generated[rid] = (
                input_len,
                output_len,
                _NEW,
                0,
            )
            for name in self.STAMPS:
                getattr(self, name)[rid] = np.nan
            return rid
        if self.n == len(self.input_len):
            size = max(2 * self.n, 64)
            for name, fill in (
                ("input_len", 0),
                ("output_len", 0),
                ("state", -1),
                ("generated", 0),
                *((s, np.nan) for s in self.STAMPS),
            ):
                old = getattr(self, name)
                new = np.full(size, fill, dtype=old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        rid = self.n
        self.input_len[rid], self.output_len[rid] = input_len, output_len
        self.n += 1
        return rid

    def cancel(self, rid: int, now: float) -> None:
        self.flush()
        if self.state[rid] in (_NEW, _DONE, _CANCELLED):
            raise RuntimeError(f"request {rid}: cancel from state {self.state[rid]}")
        self.state[rid] = _CANCELLED
        self.finish_s[rid] = now

    def retry(self, rid: int) -> None:
        """A fault cut the request (its prefill in flight, or its KV after): its client sends it again (same
        arrival), so it queues for prefill with nothing generated and every later stamp cleared."""
        self.flush()
        if self.state[rid] not in (_PREFILLING, _KV, _DECODING):
            raise RuntimeError(f"request {rid}: retried from state {self.state[rid]}")
        self.state[rid] = _QUEUED
        self.generated[rid] = 0
        for name in self.STAMPS[1:]:
            getattr(self, name)[rid] = np.nan

    def _advance(self, rid: int, expected: int, new: int, column: np.ndarray, now: float) -> None:
        if self.state.item(rid) != expected:
            raise RuntimeError(f"request {rid}: {State(new).name} from state {self.state[rid]}")
        self.state[rid] = new
        column[rid] = now

    def arrive(self, rid: int, now: float) -> None:
        self._advance(rid, _NEW, _QUEUED, self.arrival_s, now)

    def arrive_range(self, start: int, end: int, times: np.ndarray) -> None:
        """``arrive`` for requests ``start`` to ``end`` - 1 at ``times`` (open-loop arrivals taken together).
        Logged, ranges that follow on from each other are applied as one (``flush``)."""
        if self.log is not None and end > start:
            if self.arriving and start != self.arrived_to:
                self._arrive_logged()
            if not self.arriving:
                self.arrived_from = start
            self.arriving.append(times)
            self.arrived_to = end
            return
        self._arrive_range(start, end, times)

    def _arrive_logged(self) -> None:
        arriving, self.arriving = self.arriving, []
        times = arriving[0] if len(arriving) == 1 else np.concatenate(arriving)
        self._arrive_range(self.arrived_from, self.arrived_to, times)

    def _arrive_range(self, start: int, end: int, times: np.ndarray) -> None:
        state = self.state[start:end]  # every one new: its highest and lowest are (argmax, argmin: no Python)
        if end > start and (state.item(state.argmax()) != _NEW or state.item(state.argmin()) != _NEW):
            raise RuntimeError(f"requests {start}-{end - 1}: an arrival from a state other than new")
        self.state[start:end] = _QUEUED
        self.arrival_s[start:end] = times

    def start_prefill(self, rid: int, now: float) -> None:
        if self.log is not None:
            self._defer(_START_PREFILL, [rid], now)
            return
        self._advance(rid, _QUEUED, _PREFILLING, self.prefill_start_s, now)

    def end_prefill(self, rid: int, now: float) -> None:
        """Prefill produced the first token; the KV cache now waits for decode admission and transfer."""
        if self.log is not None:
            self._defer(_END_PREFILL, [rid], now)
            return
        self._advance(rid, _PREFILLING, _KV, self.prefill_end_s, now)
        self.generated[rid] = 1

    def admit_decode(self, rid: int, now: float) -> None:
        """Decode reserved KV blocks; the transfer over RDMA starts now."""
        if self.log is not None:
            self._defer(_ADMIT, [rid], now)
            return
        if self.state[rid] != _KV:
            raise RuntimeError(f"request {rid}: decode admission from state {self.state[rid]}")
        self.decode_admit_s[rid] = now

    def start_decode(self, rid: int, now: float) -> None:
        """The KV cache arrived: the first token is delivered and the sequence joins the decode batch."""
        if self.log is not None:
            self._defer(_START_DECODE, [rid], now)
            return
        self._advance(rid, _KV, _DECODING, self.first_token_s, now)

    def finish(self, rids: list[int] | np.ndarray, now: float) -> None:
        """The last token is out: every token of the output has been generated."""
        if self.log is not None:
            self._defer(_FINISH, np.asarray(rids).tolist(), now)
            return
        if np.count_nonzero(self.state[rids] != _DECODING):
            raise RuntimeError("finish of a request that is not decoding")
        self.state[rids] = _DONE
        self.finish_s[rids] = now
        self.generated[rids] = self.output_len[rids]

    def finish_later(self, rids: list[int] | np.ndarray, now: float) -> None:
        """``finish`` with only the time written now, the rest when ``settle`` is called: a batch run finishes a
        few requests at a time, and the other writes cost more than the decode step that finished them."""
        if self.log is not None:
            self._defer(_FINISH, rids if isinstance(rids, list) else rids.tolist(), now)
            return
        self.finish_s[rids] = now

    def finish_later_steps(self, rids: list[int], times: list[float], counts: list[int]) -> None:
        """``finish_later`` for the finishes of consecutive steps at once: the first ``counts[0]`` of ``rids`` at
        ``times[0]``, the next ``counts[1]`` at ``times[1]``, and so on."""
        if self.log is None:
            self.finish_s[rids] = np.repeat(times, counts)
            return
        ids, at, sizes = self.log[_FINISH]
        ids += rids
        at += times
        sizes += counts
        self.logged += len(rids)
        if self.logged >= FLUSH_ROWS:
            self.flush()

    def settle(self) -> None:
        """Complete the finishes ``finish_later`` began: a decoding request with a finish time is done (and
        apply the deferred transitions)."""
        self.flush()
        done = (self.state == _DECODING) & ~np.isnan(self.finish_s)
        self.state[done] = _DONE
        self.generated[done] = self.output_len[done]

    def _advance_many(
        self, rids: list[int] | np.ndarray, expected: int, new: int, column: np.ndarray, now: float
    ) -> np.ndarray:
        """``_advance`` for a batch of requests at once (a prefill batch, a KV transfer landing); returns
        their ids as an array."""
        at = np.asarray(rids, dtype=np.int64)
        if np.count_nonzero(self.state[at] != expected):
            bad = int(at[np.argmax(self.state[at] != expected)])
            raise RuntimeError(f"request {bad}: {State(new).name} from state {self.state[bad]}")
        self.state[at] = new
        column[at] = now
        return at

    def admit_decodes(self, rids: list[int], now: float) -> None:
        """``admit_decode`` for requests admitted together."""
        if self.log is not None:
            self._defer(_ADMIT, rids, now)
            return
        self._advance_many(rids, _KV, _KV, self.decode_admit_s, now)

    def start_decodes(self, rids: list[int], now: float) -> None:
        """``start_decode`` for KV transfers that landed together."""
        if self.log is not None:
            self._defer(_START_DECODE, rids, now)
            return
        self._advance_many(rids, _KV, _DECODING, self.first_token_s, now)

    def start_prefills(self, rids: list[int], now: float) -> None:
        if self.log is not None:
            self._defer(_START_PREFILL, rids, now)
            return
        self._advance_many(rids, _QUEUED, _PREFILLING, self.prefill_start_s, now)

    def end_prefills(self, rids: list[int], now: float) -> None:
        if self.log is not None:
            self._defer(_END_PREFILL, rids, now)
            return
        self.generated[self._advance_many(rids, _PREFILLING, _KV, self.prefill_end_s, now)] = 1


def unservable(t: RequestTable) -> InfeasibleDeploymentError:
    """Requests that no pool can ever take (a prompt longer than a prefill batch or the KV a decode die holds)
    leave a simulation nothing to wait for: name the longest of them rather than end without an answer."""
    left = np.flatnonzero((t.state >= 0) & (t.state < int(State.DONE)))
    worst = int(left[np.argmax(t.input_len[left] + t.output_len[left])]) if left.size else 0
    return InfeasibleDeploymentError(
        f"{left.size:,} of {len(t):,} requests can never be served by this deployment: e.g. request {worst} "
        f"({int(t.input_len[worst]):,} prompt + {int(t.output_len[worst]):,} output tokens) fits no prefill "
        "batch or decode KV cache; expected requests the deployment can hold (shorten them or add chips)"
    )
