"""The uvicorn server of `serve`, with a drain on SIGTERM: admission stops at once, running streams may
finish until the deadline, and those still open then end with an error event before the server closes.
Connections go through the bounded protocol of connections.py."""

from __future__ import annotations

import math
from types import FrameType
from typing import Any

import uvicorn

from cloudmatrix.emulator.connections import ConnectionLimits, protocol_class
from cloudmatrix.emulator.engine import RealtimeEngine

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
