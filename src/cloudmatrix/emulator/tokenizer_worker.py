"""``serve --tokenizer``: prompts are tokenised in worker processes, off the event loop. A tokenizer.json is
data that drives native code: a backtracking regex can panic or run for seconds, an unknown token can raise,
a multi-megabyte prompt takes seconds to encode. Each worker loads the file once and answers one request at
a time over its pipes; the server awaits the answer from a thread, so the loop keeps serving other clients.
A worker that passes its time bound is killed and replaced (a thread could not be stopped); any failure is
the request's 400, never the server's. At load the file must encode a probe set within the bound, or the
command refuses it. Run as ``python -m cloudmatrix.emulator.tokenizer_worker`` it is the worker itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import cloudmatrix
from cloudmatrix.emulator.text import MAX_TOKENIZER_BYTES, HFTokens, Measured, chat_text, measure_texts
from cloudmatrix.errors import ConfigError
from cloudmatrix.inputs import read_text

WORKERS = 2  # one request tokenising a huge prompt leaves the other worker to everyone else
LOAD_TIMEOUT_S = 60.0  # starting Python and importing tokenizers (~1 s on a busy core), parsing a large file
# A byte-level BPE encodes about 1 us per character on an idle core and 3-4 us on a contended one; the bound
# leaves room for that (a 4 MiB prompt: 47 s) and still ends a regex that backtracks without end.
BASE_TIMEOUT_S = 5.0
SECONDS_PER_CHAR = 1e-5
PROBE_BLOCK_TOKENS = 16
PROBES: tuple[tuple[str, str], ...] = (
    ("a short sentence", "Hello, world! How are you today?"),
    ("unknown words", "zqxjkv qwpfmb 12345 #@%^&* ~~ foo_bar-baz"),
    ("non-ASCII text", "naïve café, Ελληνικά, русский, 東京タワー, 😀🚀, عربى"),
    ("'a' * 10000 + '!'", "a" * 10_000 + "!"),
    ("'(' * 5000", "(" * 5_000),
    ("whitespace runs", " " * 3_000 + "x" + "\t\n " * 1_000 + "y" + "\n" * 2_000),
    ("the empty string", ""),
    ("a short chat prompt", chat_text([("system", "You are a helpful assistant."), ("user", "Hi! What is 2+2?")])),
)
_HEADER = struct.Struct(">Q")
DECODE = "decode"  # a request ("decode", ids) turns token ids back into text (``/detokenize``)


class TokenizerFailed(Exception):
    """The tokenizer could not encode one request's prompt (it raised, panicked, died or ran too long)."""


def time_bound_s(chars: int) -> float:
    return BASE_TIMEOUT_S + SECONDS_PER_CHAR * chars


# ---- the worker process ------------------------------------------------------------------------------------
def _send(out: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)) + data)
    out.flush()


def _write_all(fd: int, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(inp: IO[bytes]) -> Any:
    """The next message from the server; None once it has closed the pipe (it exited: so does the worker)."""
    head = inp.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    return pickle.loads(inp.read(_HEADER.unpack(head)[0]))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def worker_main() -> None:
    """Load the tokenizer the server sends, then encode requests until the server closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C drains the server; it closes the pipe when done
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # only messages on the pipe
    path, text = _receive(inp)
    try:
        tokens = HFTokens(Path(path), text)
    except ConfigError as e:
        _send(out, ("error", str(e)))
        return
    _send(out, ("ready", None))
    while (request := _receive(inp)) is not None:
        try:
            if request[0] == DECODE:
                reply: tuple[str, Any] = ("ok", tokens.decode(request[1]))
            else:
                reply = ("ok", measure_texts(tokens, *request))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # a Rust panic arrives as pyo3's PanicException, a BaseException
            reply = ("error", _first_line(e))
        _send(out, reply)


# ---- the server's side -------------------------------------------------------------------------------------
def _worker_env() -> dict[str, str]:
    """The server's environment, with this very copy of cloudmatrix first on the path and no Rust backtraces."""
    package_root = str(Path(cloudmatrix.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, RUST_BACKTRACE="0")


class _Worker:
    """One worker process, started on first use and again after it is killed or dies. Used by one thread at
    a time (the pool hands it out)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self.proc: subprocess.Popen[bytes] | None = None
        self.closed = False  # the server is shutting down: no new process

    def start(self) -> None:
        if self.closed:
            raise TokenizerFailed("the server is shutting down")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cloudmatrix.emulator.tokenizer_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # a panic's message: the request's 400 carries it instead
                env=_worker_env(),
                bufsize=0,
            )
        except OSError as e:
            raise TokenizerFailed(f"cannot start a worker process ({e.strerror or e})") from None
        kind, detail = self._exchange((str(self.path), self.text), LOAD_TIMEOUT_S, "loading")
        if kind != "ready":
            self.kill()
            raise ConfigError(detail)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.proc = None

    def revive(self) -> None:
        """Start again a worker that was killed or died (a failure here is retried on the next request)."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            with contextlib.suppress(ConfigError, TokenizerFailed):
                self.start()

    def measure(self, request: tuple[Any, ...], timeout_s: float) -> Any:
        """A measurement (Measured), or with a DECODE request the decoded text."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            try:
                self.start()
            except ConfigError as e:
                raise TokenizerFailed(f"its worker could not be restarted ({e})") from None
        kind, detail = self._exchange(request, timeout_s, "encoding")
        if kind != "ok":
            raise TokenizerFailed(detail)
        assert isinstance(detail, (Measured, str))
        return detail

    def _exchange(self, message: Any, timeout_s: float, doing: str) -> tuple[str, Any]:
        """Send one message and wait for the reply; past the deadline the worker is killed."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        try:
            _write_all(self.proc.stdin.fileno(), message)
            head = self._read(_HEADER.size, deadline)
            reply = pickle.loads(self._read(_HEADER.unpack(head)[0], deadline))
        except TimeoutError:
            self.kill()
            raise TokenizerFailed(f"{doing} took longer than {timeout_s:.1f} s; its worker is restarted") from None
        except (OSError, EOFError):
            try:
                code: int | None = self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            raise TokenizerFailed(f"its worker exited while {doing} (status {code})") from None
        return reply

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd, chunks, left = self.proc.stdout.fileno(), [], size
        while left:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


class TokenizerPool:
    """Prompt measurement for the server through ``WORKERS`` long-lived worker processes. Construction loads
    the file in every worker and checks it against ``PROBES`` (ConfigError naming the file otherwise)."""

    def __init__(self, path: Path, workers: int = WORKERS) -> None:
        text = read_text(path, "tokenizer file", max_bytes=MAX_TOKENIZER_BYTES)
        self.name = f"tokenizer {path.name}"
        self.workers = [_Worker(path, text) for _ in range(workers)]
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="tokenizer")
        self.idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self.workers:
            self.idle.put(worker)
        try:
            starts = [self.executor.submit(w.start) for w in self.workers]
            for start in starts:  # every start ends (within LOAD_TIMEOUT_S) before the first error is raised
                start.exception()
            for start in starts:
                start.result()
            self._probe(path)
        except (ConfigError, TokenizerFailed) as e:
            self.close()
            message = str(e)
            raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None

    def _probe(self, path: Path) -> None:
        for label, text in PROBES:
            try:
                got = self.workers[0].measure(([text], text, PROBE_BLOCK_TOKENS), time_bound_s(2 * len(text)))
            except TokenizerFailed as e:
                raise ConfigError(f"{path}: cannot encode a probe prompt ({label}): {e}") from None
            if len(text.split()) >= 2 and got.counts[0] < 2:  # counts are at least 1, even for no tokens
                raise ConfigError(f"{path}: encodes a probe prompt of several words ({label}) to at most 1 token")

    async def measure(
        self, texts: list[str], block_text: str | None, block_tokens: int, with_ids: bool = False
    ) -> Measured:
        """One request's prompt, measured by the next idle worker (TokenizerFailed: the request's 400). A
        request whose client leaves while it waits for a worker is dropped from the queue."""
        chars = sum(map(len, texts)) + len(block_text or "")
        job = self.executor.submit(self._measure, (texts, block_text, block_tokens, with_ids), time_bound_s(chars))
        measured = await asyncio.wrap_future(job)
        assert isinstance(measured, Measured)
        return measured

    async def decode(self, ids: list[int]) -> str:
        """Token ids back to text by the next idle worker (TokenizerFailed: the request's 400)."""
        job = self.executor.submit(self._measure, (DECODE, ids), time_bound_s(len(ids)))
        text = await asyncio.wrap_future(job)
        assert isinstance(text, str)
        return text

    def _measure(self, request: tuple[Any, ...], timeout_s: float) -> Any:
        """In one of the executor's threads, as many as workers: a worker is idle or about to be."""
        worker = self.idle.get()
        try:
            return worker.measure(request, timeout_s)
        finally:
            if worker.proc is None:  # killed: it starts again while this request's 400 goes out
                threading.Thread(target=self._revive, args=(worker,), daemon=True).start()
            else:
                self.idle.put(worker)

    def _revive(self, worker: _Worker) -> None:
        try:
            worker.revive()
        finally:
            self.idle.put(worker)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        for worker in self.workers:
            worker.closed = True
            worker.kill()


if __name__ == "__main__":
    worker_main()
