"""The connection layer of `serve`: uvicorn's httptools protocol with the limits its parser lacks. A request's
header is bounded in bytes and in fields (431), must arrive within a deadline from its first byte (408), and
its body within a deadline from the header's end; a connection with no request in progress is closed after
the keep-alive timeout; open connections are capped below the descriptor limit, and at the cap the oldest
idle connection is closed to make room before a new one is refused (503)."""

from __future__ import annotations

import asyncio
import json
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DESCRIPTOR_MARGIN = 64  # descriptors kept back from the cap: listener, event loop, stdio, files the server opens
CONNECTIONS_CEILING = 4096  # the default cap never passes this, so half-sent headers stay within ~64 MiB
LINGER_S = 1.0  # after a refusal, input is read and dropped this long (and this much) so the client can read
LINGER_BYTES = 64 * 1024  # the answer before the close resets the connection (a flood is cut sooner)


def descriptor_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def max_connections_allowed() -> int:
    """The most connections the process's descriptors can hold beside its own files."""
    return max(descriptor_limit() - DESCRIPTOR_MARGIN, 1)


def default_max_connections() -> int:
    return min(max_connections_allowed(), CONNECTIONS_CEILING)


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    max_header_bytes: int = 16 * 1024  # h11's and Node's default
    max_headers: int = 100  # Apache's LimitRequestFields
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0  # the whole body, so a trickle of bytes cannot hold a connection open
    keep_alive_timeout_s: float = 5.0  # uvicorn's default
    max_connections: int = CONNECTIONS_CEILING


class Phase(Enum):
    """Where the parser is in the connection's latest request."""

    WAITING = "waiting"  # between requests (a response may still be running)
    HEADER = "header"
    BODY = "body"


class HeaderTooLarge(Exception):
    """Raised inside a parser callback to stop parsing; the protocol answers 431."""


class ConnectionRegistry:
    """The server's open connections, and its idle ones in the order they became idle (oldest first)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: set[GuardedHttpProtocol] = set()
        self.idle: OrderedDict[GuardedHttpProtocol, None] = OrderedDict()

    def admit(self, conn: GuardedHttpProtocol) -> bool:
        """Register a new connection, closing the oldest idle one at the cap; False if none is idle."""
        if len(self.open) >= self.limits.max_connections:
            if not self.idle:
                return False
            oldest, _ = self.idle.popitem(last=False)
            self.forget(oldest)
            oldest.transport.close()
        self.open.add(conn)
        return True

    def set_idle(self, conn: GuardedHttpProtocol, idle: bool) -> None:
        if idle and conn in self.open:
            self.idle[conn] = None  # newly idle: the end of the order (a repeat keeps its place)
        else:
            self.idle.pop(conn, None)

    def discard_first(self, conn: GuardedHttpProtocol) -> None:
        """A refused connection lingering to be read: the first to close at the cap."""
        if conn in self.open:
            self.idle[conn] = None
            self.idle.move_to_end(conn, last=False)

    def forget(self, conn: GuardedHttpProtocol) -> None:
        self.open.discard(conn)
        self.idle.pop(conn, None)


def error_response(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP response with OpenAI's error body that closes the connection."""
    kind, retry = ("server_error", "retry-after: 1\r\n") if status >= 500 else ("invalid_request_error", "")
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{retry}\r\n"
    )
    return head.encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """One connection. Timers are settled after each read and each finished response, keyed by the request
    and its phase, so a deadline runs from the phase's start and is never pushed back by more bytes."""

    registry: ClassVar[ConnectionRegistry]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase, self.requests_begun = Phase.WAITING, 0
        self.header_bytes = self.raw_header_bytes = self.header_count = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_key: tuple[Phase, int, bool] | None = None
        self.refused = self.ended_in_read = False
        self.lingered_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.registry.admit(self):
            self.settle()
        else:  # at the cap with nothing idle: answer and close at once, holding no descriptor longer
            busy = "Too many open connections; retry shortly."
            self.transport.write(error_response(503, "Service Unavailable", busy, "server_busy"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.forget(self)
        self.cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # lingering after a refusal: drop what is still coming, up to a budget
            self.lingered_bytes += len(data)
            if self.lingered_bytes > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        self.ended_in_read = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # serve has no WebSocket: the request is answered as plain HTTP, nothing worth a log line
        except httptools.HttpParserError as e:
            if isinstance(e.__cause__ or e.__context__, HeaderTooLarge):
                self.refuse_header()
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self.phase is Phase.HEADER:
            # Bytes of a header still incomplete: what the parser holds. A request begun after another one
            # ended in this same read is counted from the next read (the boundary is not known).
            if not self.ended_in_read:
                self.raw_header_bytes += len(data)
            if self.raw_header_bytes > self.registry.limits.max_header_bytes:
                self.refuse_header()
                return
        self.settle()

    # Parser callbacks: the header's size and fields are counted as they are parsed.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase, self.requests_begun = Phase.HEADER, self.requests_begun + 1
        self.header_bytes = self.raw_header_bytes = self.header_count = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.count_header(len(url), 0)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count_header(len(name) + len(value) + 4, 1)  # ": " and CRLF
        super().on_header(name, value)

    def count_header(self, size: int, fields: int) -> None:
        self.header_bytes += size
        self.header_count += fields
        limits = self.registry.limits
        if self.header_bytes > limits.max_header_bytes or self.header_count > limits.max_headers:
            raise HeaderTooLarge()

    def on_headers_complete(self) -> None:
        self.phase = Phase.BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.phase, self.ended_in_read = Phase.WAITING, True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.settle()

    # Deadlines and idleness.
    def answering(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def settle(self) -> None:
        """Arm the deadline of the phase the connection is now in, unless it already runs for it."""
        idle = self.phase is Phase.WAITING and not self.answering()
        queued = self.phase is Phase.BODY and bool(self.pipeline)  # reading paused until its turn
        key = (self.phase, self.requests_begun, idle or queued)
        if key == self.timer_key:
            return
        self.cancel_timer()
        self.timer_key = key
        self.registry.set_idle(self, idle)
        limits = self.registry.limits
        deadline: tuple[float, Callable[[], None]] | None = None
        if idle:
            deadline = (limits.keep_alive_timeout_s, self.transport.close)
        elif self.phase is Phase.HEADER:
            deadline = (limits.header_timeout_s, self.header_timed_out)
        elif self.phase is Phase.BODY and not queued:
            deadline = (limits.body_timeout_s, self.transport.close)  # the app sees a disconnect
        if deadline is not None:
            self.timer = self.loop.call_later(*deadline)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def header_timed_out(self) -> None:
        limit = self.registry.limits.header_timeout_s
        self.refuse(408, "Request Timeout", f"The request header did not arrive within {limit:g} s.", "timeout")

    def refuse_header(self) -> None:
        limits = self.registry.limits
        message = (
            f"The request header exceeds the server's limits ({limits.max_header_bytes} bytes, "
            f"{limits.max_headers} fields)."
        )
        self.refuse(431, "Request Header Fields Too Large", message, "request_header_too_large")

    def refuse(self, status: int, reason: str, message: str, code: str) -> None:
        """Answer and close. A response already running on this connection is cut instead (a second answer
        would interleave with it). Input is then read and dropped for a moment, since closing a socket with
        unread input resets it and the client could lose the answer."""
        self.cancel_timer()
        if self.transport.is_closing():
            return
        if self.answering():
            self.transport.close()
            return
        self.transport.write(error_response(status, reason, message, code))
        self.refused = True
        self.registry.discard_first(self)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.timer = self.loop.call_later(LINGER_S, self.transport.close)


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A protocol class bound to one server's limits and registry (uvicorn instantiates it per connection)."""

    class ServerProtocol(GuardedHttpProtocol):
        registry = ConnectionRegistry(limits)

    return ServerProtocol
