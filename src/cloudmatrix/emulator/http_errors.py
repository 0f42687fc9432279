"""The emulator's HTTP errors: OpenAI's error body for every failure (the API's own, FastAPI's 404/405/422),
the drain signal of a SIGTERM, and the request counter by route template."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudmatrix.emulator.metrics import Metrics

CLIENT_CLOSED = "499"  # nginx's status for a client that left before its answer: not a server error


class ServerDraining(Exception):
    """The drain deadline of a SIGTERM passed while this request was still running."""


class InstanceFailed(Exception):
    """A simulated fault lost the decode instance (or die) serving this request."""


def recovering_error(retry_s: int) -> ApiError:
    """503 while a simulated fault's recovery holds the deployment, with when to come back."""
    return ApiError(
        503,
        f"The deployment is recovering from a hardware fault (simulated). Retry after {retry_s} s.",
        "server_error",
        code="instance_recovering",
        headers={"Retry-After": str(retry_s)},
    )


def rate_limited(outstanding: int, wanted: int, admitted: int, retry_s: int) -> ApiError:
    """429 when ``wanted`` more requests would pass the deployment's admission bound, with when to come back."""
    return ApiError(
        429,
        f"{outstanding} requests in flight and {wanted} more asked for: the deployment admits "
        f"{admitted}. Retry after {retry_s} s.",
        "rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_s)},
    )


def fault_event() -> dict[str, Any]:
    """The error event that ends a stream whose sequence a simulated fault lost."""
    message = "The decode instance serving this request failed (simulated fault); retry it."
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "instance_failed"}}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def route_label(scope: Scope) -> str:
    """The route template a request matched, so metric labels stay a fixed set (unknown paths: 'other')."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "other"


class RequestCounter:
    """Counts every response by route template and status at its first byte. Plain ASGI, not Starlette's
    BaseHTTPMiddleware, which would copy every streamed chunk through a second queue (a third of the
    server's time under load). A client that leaves while its body is read ends the request here, quietly:
    counted as 499 so the total still holds every request, and kept out of the 5xx a failure would be."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.requests.labels(route_label(scope), str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except ClientDisconnect:
            if not started:
                started = True
                self.metrics.requests.labels(route_label(scope), CLIENT_CLOSED).inc()
        finally:
            if not started:  # the app failed before answering: Starlette's outer layer sends the 500
                self.metrics.requests.labels(route_label(scope), "500").inc()


def add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    app.add_middleware(RequestCounter, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """404 and 405 in OpenAI's error body, not FastAPI's ``{"detail": ...}``."""
        kinds = {404: ("not_found_error", "unknown_url"), 405: ("invalid_request_error", "method_not_allowed")}
        kind, code = kinds.get(exc.status_code, ("invalid_request_error", None))
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return await _api_error(request, ApiError(exc.status_code, message, kind, code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()))
        return await _api_error(request, ApiError(422, f"{param}: {first.get('msg')}", param=param or None))
