"""serve's connection limits against raw sockets, each as a class: oversized headers in any shape (431, closed),
too many header fields (431), half-sent headers and stalled bodies (closed at their deadline however slowly
bytes trickle in), idle connections (closed after the keep-alive timeout), the connection cap (the oldest
idle connection makes room; with none idle, 503), and clients that leave mid-request (never a 500, never a
traceback)."""

import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmatrix.cli.app import main
from cloudmatrix.emulator.connections import max_connections_allowed
from tests.emulator.conftest import API_KEY, Server, _free_port, start_server

HEADER_BYTES, HEADERS, TIMEOUT_S = 4096, 20, 1.0
LIMITS = (
    *("--max-header-bytes", str(HEADER_BYTES), "--max-headers", str(HEADERS)),
    *("--header-timeout", str(TIMEOUT_S), "--body-timeout", str(TIMEOUT_S), "--keep-alive-timeout", str(TIMEOUT_S)),
)
SLACK_S = 1.5  # a deadline fires no earlier than set and within this much after, on a loaded 2-core host


def _stop(server: Server) -> str:
    server.proc.terminate()
    _, err = server.proc.communicate(timeout=15)
    return err or ""


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    server = start_server("--api-key", API_KEY, *LIMITS)
    yield server
    _stop(server)


def _wait_until_up(server: Server) -> None:
    for _ in range(400):
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.025)
    raise RuntimeError("server did not start")


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _send_until_answered(sock: socket.socket, pieces: list[bytes], pause_s: float = 0.0) -> bytes:
    """Send piece by piece until the server answers or closes; then everything it sends until it closes."""
    for piece in pieces:
        try:
            sock.sendall(piece)
        except OSError:
            break
        if select.select([sock], [], [], pause_s)[0]:
            break
    return _read_to_close(sock)


def _read_to_close(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _health_answer(sock: socket.socket) -> bytes:
    """One whole /health answer on a kept-alive connection (its JSON may come in a second write)."""
    data = b""
    while not data.endswith(b"}"):
        data += sock.recv(65536)
    return data


def _closed_after(sock: socket.socket) -> tuple[bytes, float]:
    start = time.perf_counter()
    data = _read_to_close(sock)
    return data, time.perf_counter() - start


def _request(headers: bytes = b"", path: bytes = b"/health") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n"


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _statuses(server: Server) -> dict[str, float]:
    """Requests counted in /metrics by status, over every route."""
    counts: dict[str, float] = {}
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("cloudmatrix_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


# ---- header size and fields --------------------------------------------------------------------------
@pytest.mark.parametrize("piece", [1 << 20, 512], ids=["one-write", "in-pieces"])
@pytest.mark.parametrize(
    "request_bytes",
    [
        _request(b"X-Pad: " + b"a" * HEADER_BYTES + b"\r\n"),  # one field too long, complete
        _request(b"X-Pad: " + b"a" * HEADER_BYTES),  # ... never finished
        _request(b"".join(b"X-%d: %s\r\n" % (i, b"b" * 300) for i in range(15))),  # fields within count, too big
        _request(path=b"/" + b"p" * HEADER_BYTES),  # the request line counts
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: " + b"f" * (4 << 20),  # 4 MiB that never ends
    ],
    ids=["long-field", "long-field-unfinished", "many-fields-too-big", "long-url", "4MiB-flood"],
)
def test_a_header_over_its_byte_limit_gets_431_and_is_closed(limited: Server, request_bytes: bytes, piece: int) -> None:
    data = _send_until_answered(_connect(limited), _pieces(request_bytes, piece))
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    assert b"connection: close" in data and b'"code": "request_header_too_large"' in data


@pytest.mark.parametrize("piece", [1 << 20, 512], ids=["one-write", "in-pieces"])
def test_a_header_within_its_byte_limit_is_answered(limited: Server, piece: int) -> None:
    fits = _request(b"Connection: close\r\nX-Pad: " + b"a" * (HEADER_BYTES - 200) + b"\r\n")
    data = _send_until_answered(_connect(limited), _pieces(fits, piece))
    assert data.startswith(b"HTTP/1.1 200 "), data[:100]


@pytest.mark.parametrize("fields", [HEADERS + 1, 100, 5000])
def test_too_many_header_fields_get_431(limited: Server, fields: int) -> None:
    extra = b"".join(b"X-%d: 1\r\n" % i for i in range(fields - 1))  # Host is the first field
    data = _send_until_answered(_connect(limited), _pieces(_request(extra), 4096))
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]


def test_the_most_header_fields_allowed_are_answered(limited: Server) -> None:
    extra = b"Connection: close\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(HEADERS - 2))
    data = _send_until_answered(_connect(limited), [_request(extra)])
    assert data.startswith(b"HTTP/1.1 200 "), data[:100]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.integers(1, HEADERS + 10),
    value_bytes=st.integers(0, 600),
    piece=st.integers(1, 8192),
)
def test_any_header_is_answered_within_its_limits_and_refused_beyond(
    limited: Server, fields: int, value_bytes: int, piece: int
) -> None:
    """Fields of any number and size, sent in reads of any size: 200 when the whole request fits, 431 when
    its parsed size or field count is over (between the two, the header's raw bytes decide)."""
    extra = b"Connection: close\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * value_bytes) for i in range(fields - 2))
    request = _request(extra)
    parsed = len(b"/health") + sum(len(line) + 2 for line in request.split(b"\r\n")[1:] if line)
    data = _send_until_answered(_connect(limited), _pieces(request, piece))
    if len(request) <= HEADER_BYTES and fields <= HEADERS:
        assert data.startswith(b"HTTP/1.1 200 "), data[:100]
    elif parsed > HEADER_BYTES or fields > HEADERS:
        assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    else:
        assert data.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 431 ")), data[:100]


def test_pipelined_requests_in_one_write_are_all_answered(limited: Server) -> None:
    sock = _connect(limited)
    sock.sendall(_request() * 3 + _request(b"Connection: close\r\n"))
    assert _read_to_close(sock).count(b"HTTP/1.1 200 ") == 4


# ---- deadlines --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "start, trickle",
    [(b"GET /health HTT", b""), (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Sl", b""), (b"GET /", b"a")],
    ids=["mid-request-line", "mid-field", "one-byte-every-0.2s"],
)
def test_a_half_sent_header_is_closed_at_its_deadline(limited: Server, start: bytes, trickle: bytes) -> None:
    sock = _connect(limited)
    sock.sendall(start)
    began = time.perf_counter()
    while trickle and time.perf_counter() - began < TIMEOUT_S + SLACK_S:
        try:
            sock.sendall(trickle)
        except OSError:
            break
        if select.select([sock], [], [], 0.2)[0]:
            break
    data = _read_to_close(sock)
    elapsed = time.perf_counter() - began
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert TIMEOUT_S * 0.9 <= elapsed <= TIMEOUT_S + SLACK_S, elapsed


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "one-byte-every-0.2s"])
def test_a_body_that_does_not_arrive_in_time_is_closed_and_not_a_500(limited: Server, trickle: bool) -> None:
    before = _statuses(limited)
    sock = _connect(limited)
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    began = time.perf_counter()
    while trickle and time.perf_counter() - began < TIMEOUT_S + SLACK_S:
        try:
            sock.sendall(b" ")
        except OSError:
            break
        if select.select([sock], [], [], 0.2)[0]:
            break
    data = _read_to_close(sock)
    elapsed = time.perf_counter() - began
    assert data == b"" and TIMEOUT_S * 0.9 <= elapsed <= TIMEOUT_S + SLACK_S, (data[:100], elapsed)
    after = _statuses(limited)
    assert after.get("499", 0) == before.get("499", 0) + 1 and after.get("500", 0) == before.get("500", 0)


@pytest.mark.parametrize("first_request", [False, True], ids=["never-a-request", "after-one-request"])
def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(limited: Server, first_request: bool) -> None:
    sock = _connect(limited)
    if first_request:
        sock.sendall(_request())
    data, elapsed = _closed_after(sock)
    assert data.count(b"HTTP/1.1 200 ") == int(first_request)
    assert TIMEOUT_S * 0.9 <= elapsed <= TIMEOUT_S + SLACK_S, elapsed


def test_a_connection_in_use_outlives_the_keep_alive_timeout(limited: Server) -> None:
    """The timeout counts from the end of each answer: requests every 0.4 s keep one connection for 2 s."""
    sock = _connect(limited)
    for _ in range(5):
        sock.sendall(_request())
        data = _health_answer(sock)
        assert data.startswith(b"HTTP/1.1 200 "), data[:100]
        time.sleep(TIMEOUT_S * 0.4)
    sock.close()


# ---- the connection cap ----------------------------------------------------------------------------------
CAP = 8


@pytest.fixture
def capped() -> Iterator[Server]:
    server = start_server("--max-connections", str(CAP), "--keep-alive-timeout", "60", "--header-timeout", "60")
    yield server
    _stop(server)


def _is_closed(sock: socket.socket) -> bool:
    if not select.select([sock], [], [], 0.5)[0]:
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("kind", ["never-a-request", "after-one-request"])
def test_at_the_cap_the_oldest_idle_connection_makes_room(capped: Server, kind: str) -> None:
    idle = []
    for _ in range(CAP):
        sock = _connect(capped)
        if kind == "after-one-request":
            sock.sendall(_request())
            assert _health_answer(sock).startswith(b"HTTP/1.1 200 ")
        idle.append(sock)
        time.sleep(0.05)  # so the order they became idle in is the order they were opened in
    assert httpx.get(f"{capped.url}/health", timeout=10).status_code == 200
    assert _is_closed(idle[0]) and not any(_is_closed(s) for s in idle[2:])


def test_at_the_cap_with_nothing_idle_a_new_connection_gets_503(capped: Server) -> None:
    busy = []
    for _ in range(CAP):
        sock = _connect(capped)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a request in progress, not idle
        busy.append(sock)
    time.sleep(0.2)
    data = _read_to_close(_connect(capped))
    assert data.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in data, data[:100]
    busy[0].sendall(b"Connection: close\r\n\r\n")  # one finishes: room again
    assert _read_to_close(busy[0]).startswith(b"HTTP/1.1 200 ")
    assert httpx.get(f"{capped.url}/health", timeout=10).status_code == 200


def test_by_default_idle_connections_beyond_the_descriptor_limit_never_starve_a_request() -> None:
    """With 128 descriptors the default cap is 64: 150 connections that send nothing leave room for a normal
    request (the oldest idle ones are closed), where they once exhausted the descriptors."""
    port = _free_port()

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    command = [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--port", str(port)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=few_descriptors)
    server = Server(url=f"http://127.0.0.1:{port}", proc=proc)
    try:
        _wait_until_up(server)
        idle = [_connect(server) for _ in range(150)]
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        assert sum(_is_closed(s) for s in idle[:20]) == 20
    finally:
        _stop(server)


def test_max_connections_beyond_the_descriptor_limit_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--max-connections", str(max_connections_allowed() + 1)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-connections") or "--max-connections" in err
    assert len(err.strip().splitlines()) == 1


# ---- clients that leave -----------------------------------------------------------------------------------
def _completion(body: bytes, declared: int, chunked: bool = False) -> bytes:
    head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
    head += b"Content-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % declared
    return head + (b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)


def test_clients_that_leave_mid_request_are_not_500s_and_log_no_traceback() -> None:
    server = start_server("--api-key", API_KEY, "--speed", "0.2")
    whole = b'{"model": "deepseek-r1", "prompt": "hello", "max_tokens": 50, "stream": %s}'
    leaving = [
        _completion(b"", 1000),  # the header, then gone
        _completion(whole[:20], 1000),  # mid-body
        _completion(whole[:20], 0, chunked=True),  # mid-body, chunked
        _completion(whole % b"true", len(whole % b"true")),  # mid-stream
        _completion(whole % b"false", len(whole % b"false")),  # waiting for a whole answer
    ]
    try:
        for request in leaving * 10:
            sock = _connect(server)
            sock.sendall(request)
            if b'"stream": true' in request:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.05)
            sock.close()
        time.sleep(1.5)  # the server notices the last ones leave
        statuses = _statuses(server)
    finally:
        err = _stop(server)
    assert not any(s.startswith("5") for s in statuses), statuses
    assert statuses.get("499", 0) >= 30, statuses  # every one that left before its answer began
    assert "Traceback" not in err and "Exception" not in err, err[:2000]
