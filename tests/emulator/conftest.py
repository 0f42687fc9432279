"""A real `cloudmatrix serve` process per fixture on loopback, driven by real HTTP clients (a separate
process, so client and server do not share an interpreter lock)."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

API_KEY = "test-key"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str) -> Server:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--port", str(port), *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url=url, proc=proc)
        except httpx.TransportError:
            time.sleep(0.025)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")


def _serve(*args: str) -> Iterator[Server]:
    server = start_server("--api-key", API_KEY, *args)
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from _serve("--max-body-bytes", "65536")


@pytest.fixture
def tight_server() -> Iterator[Server]:
    """One request in flight at most, at a fifth of real time, so a second one is refused."""
    yield from _serve("--max-outstanding", "1", "--speed", "0.2")
