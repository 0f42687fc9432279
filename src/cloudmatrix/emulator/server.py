"""The uvicorn server of `serve`, with a drain on SIGTERM: admission stops at once, running streams may
finish until the deadline, and those still open then end with an error event before the server closes.
Connections go through the bounded protocol of connections.py."""

from __future__ import annotations

import math
import socket
from types import FrameType
from typing import Any

import uvicorn

from cloudmatrix.emulator.connections import ConnectionLimits, protocol_class
from cloudmatrix.emulator.engine import RealtimeEngine
from cloudmatrix.inputs import InputError

CLOSE_MARGIN_S = 0.5  # between ending the open streams and uvicorn closing their connections


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: RealtimeEngine, drain_s: float) -> None:
        super().__init__(config)
        self.engine, self.drain_s = engine, drain_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self.engine.loop
        if not self.should_exit and loop is not None:
            loop.call_soon_threadsafe(self.engine.begin_drain, max(self.drain_s - CLOSE_MARGIN_S, 0.0))
        super().handle_exit(sig, frame)


def serve_config(app: Any, host: str, port: int, drain_s: float, limits: ConnectionLimits) -> uvicorn.Config:
    """uvicorn's graceful-shutdown timeout leaves the streams their drain, then the margin to end. The protocol
    keeps its own idle deadline; uvicorn's (whole seconds) is set no shorter, so it never fires first."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=protocol_class(limits),
        ws="none",
        timeout_keep_alive=math.ceil(limits.keep_alive_timeout_s) + 1,
        timeout_graceful_shutdown=math.ceil(drain_s + CLOSE_MARGIN_S),
    )


def check_listen(host: str, port: int) -> None:
    """Refuse, before anything starts, an address the server could not listen on: a name that does not
    resolve or is not a host name at all, an address of no local interface, a port in use. (uvicorn logs these
    and exits from inside its loop.) An empty host would mean every interface: that must be said (0.0.0.0)."""
    if not host.strip():
        raise InputError(f"--host {host!r}: empty; expected an address (0.0.0.0 or :: to listen on every interface)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except (OSError, UnicodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        shown = host if len(host) <= 60 else f"{host[:57]}..."
        raise InputError(f"--host {shown} --port {port}: cannot listen there ({why})") from None
