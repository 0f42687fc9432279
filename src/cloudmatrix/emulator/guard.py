"""Who may talk to `serve`, as plain ASGI layers (BaseHTTPMiddleware would copy every streamed chunk): the
Host allow-list against DNS rebinding, cross-origin rules (CORS only for the origins given, and no
state-changing request from any other page), the API key (a Bearer header, or the dashboard's cookie), and
the headers every response carries. The checks run before any route, so a new route is protected too."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudmatrix.emulator.http_errors import ApiError
from cloudmatrix.inputs import InputError

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
ANY_HOST = "*"
COOKIE = "cloudmatrix_session"
OPEN_PATHS = frozenset({"/health"})  # answered without the key: a liveness probe reveals nothing
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Every response: nothing is sniffed into HTML, nothing leaks a URL onwards, no page of ours is framed or
# runs anything unless it sends its own policy (the dashboard does).
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
DEFAULT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, kw_only=True)
class AccessPolicy:
    api_key: str | None = None
    allowed_hosts: frozenset[str] = frozenset(LOCAL_HOSTS)  # lower case, IPv6 in brackets; "*": any
    allowed_origins: frozenset[str] = frozenset()  # scheme://host[:port], as browsers send Origin
    public_metrics: bool = False

    def session(self) -> bytes:
        """The dashboard cookie's value: derived from the key, so the cookie never holds the key itself."""
        assert self.api_key is not None
        return hmac.new(self.api_key.encode(), b"cloudmatrix dashboard session", hashlib.sha256).hexdigest().encode()


# ---- option parsing (the CLI turns InputError into one line and exit 2) -------------------------------
def check_api_key(key: str, field: str, absent: str) -> str:
    """A key that a client can send: not empty, no surrounding whitespace (HTTP strips it from headers,
    so such a key could never match), no control characters. The message never repeats the key."""
    if not key.strip():
        raise InputError(f"{field}: is empty; give a key, or {absent} to serve without one")
    if key != key.strip():
        raise InputError(f"{field}: starts or ends with whitespace, which HTTP strips from headers; remove it")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InputError(f"{field}: holds a control character; expected printable text")
    return key


def listed(values: list[str] | None) -> list[str]:
    """A repeatable option whose values may also be comma-separated."""
    return [part.strip() for value in values or [] for part in value.split(",")]


def host_name(value: str) -> str | None:
    """A host as a Host header names it: a DNS name or IPv4 address (lower case), or an IPv6 address in
    brackets; None if it is neither."""
    text = value.strip().lower().rstrip(".")
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        labels = text.split(".")
        return text if len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels) else None
    return f"[{address}]" if address.version == 6 else str(address)


def parse_hosts(values: list[str] | None, listen_host: str) -> frozenset[str]:
    """The Host allow-list: the local names, the address `serve` listens on, and ``--allowed-hosts``."""
    hosts = set(LOCAL_HOSTS)
    own = host_name(listen_host)
    if own is not None:
        hosts.add(own)
    for entry in listed(values):
        name = ANY_HOST if entry == ANY_HOST else host_name(entry)
        if name is None:
            raise InputError(
                f"--allowed-hosts: got {entry!r}; expected host names or addresses without a port "
                "(example.org, 10.0.0.5, [fd00::1]) or * for any"
            )
        hosts.add(name)
    return frozenset(hosts)


def parse_origins(values: list[str] | None) -> frozenset[str]:
    """``--allowed-origins``: web origins as browsers send them, scheme://host[:port] with no path."""
    origins = set()
    for entry in listed(values):
        expected = "expected an origin such as http://localhost:3000 (http or https, a host, an optional port)"
        try:
            parts = urlsplit(entry)
            port = parts.port
        except ValueError:
            raise InputError(f"--allowed-origins: got {entry!r}; {expected}") from None
        host = host_name(parts.hostname or "")
        if parts.scheme not in ("http", "https") or host is None or parts.path not in ("", "/"):
            raise InputError(f"--allowed-origins: got {entry!r}; {expected}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise InputError(f"--allowed-origins: got {entry!r}; {expected}")
        default = {"http": 80, "https": 443}[parts.scheme]
        origins.add(f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else ""))
    return frozenset(origins)


# ---- the ASGI layers ----------------------------------------------------------------------------------
def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def requested_host(value: bytes | None) -> str | None:
    """The host of a Host header with its port dropped, or None when it is missing or malformed."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        host, port = (text[: end + 1], text[end + 1 :]) if end > 0 else ("", "")
    elif ":" in text:
        host, _, rest = text.partition(":")
        port = ":" + rest
    if port and not (port.startswith(":") and port[1:].isdigit()):
        return None
    return host_name(host) if host else None


class HostCheck:
    """Refuses (400) a request whose Host is not on the list before anything else runs, so a page on a
    rebound DNS name cannot reach the server; adds the common headers to every response."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == DEFAULT_CSP[0] for k, _ in headers):
                    headers.append(DEFAULT_CSP)
                message["headers"] = headers + COMMON_HEADERS
            await send(message)

        hosts = self.policy.allowed_hosts
        raw = header(scope, b"host")
        if ANY_HOST not in hosts and requested_host(raw) not in hosts:
            shown = "none" if raw is None else repr(raw.decode("latin-1")[:100])
            error = ApiError(
                400,
                f"Host header {shown} is not one this server answers to; add its name with --allowed-hosts",
                code="host_not_allowed",
            )
            await error.response()(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


class KeyCheck:
    """Refuses a state-changing request from a web page of another origin (403), and, when a key is set,
    any request but /health (and /metrics with --public-metrics) that does not carry it (401). The key
    comes as ``Authorization: Bearer KEY``, or for reading (GET) as the cookie that ``/dashboard?key=KEY``
    sets once: HttpOnly, SameSite=Strict, holding a digest of the key rather than the key."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app, self.policy = app, policy
        self.open_paths = OPEN_PATHS | ({"/metrics"} if policy.public_metrics else set())
        key = policy.api_key
        self.bearer = None if key is None else key.encode()
        self.session = None if key is None else policy.session()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.cross_site(scope)
        if refusal is None and self.bearer is not None:
            if scope["path"] == "/dashboard" and scope["method"] == "GET" and b"key=" in scope["query_string"]:
                await self.login(scope)(scope, receive, send)
                return
            if not self.authorized(scope):
                refusal = self.missing_key(scope["path"])
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def cross_site(self, scope: Scope) -> ApiError | None:
        origin = header(scope, b"origin")
        if origin is None or scope["method"] in SAFE_METHODS:
            return None
        shown = origin.decode("latin-1")
        host = (header(scope, b"host") or b"").decode("latin-1")
        if shown in self.policy.allowed_origins or shown in (f"http://{host}", f"https://{host}"):
            return None
        return ApiError(
            403,
            f"Origin {shown[:100]!r} may not send {scope['method']} requests here; list it with --allowed-origins",
            "permission_error",
            code="origin_not_allowed",
        )

    def login(self, scope: Scope) -> Response:
        """``GET /dashboard?key=KEY``: with the right key, set the session cookie and redirect to the bare
        URL, so the key leaves the address bar and the history."""
        assert self.bearer is not None and self.session is not None
        given = parse_qs(scope["query_string"].decode("latin-1")).get("key", [""])[0]
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.bearer):
            error = ApiError(
                401, "Incorrect API key in /dashboard?key=.", "authentication_error", code="invalid_api_key"
            )
            return error.response()
        response = RedirectResponse("/dashboard", status_code=303, headers={"cache-control": "no-store"})
        response.set_cookie(COOKIE, self.session.decode(), httponly=True, samesite="strict", path="/")
        return response

    def authorized(self, scope: Scope) -> bool:
        assert self.bearer is not None and self.session is not None
        if scope["path"] in self.open_paths:
            return True
        given = header(scope, b"authorization") or b""
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.bearer):
            return True
        cookie = header(scope, b"cookie")
        if cookie is None or scope["method"] not in ("GET", "HEAD"):  # the cookie reads, never writes
            return False
        session = cookie_parser(cookie.decode("latin-1")).get(COOKIE, "")
        return hmac.compare_digest(session.encode("latin-1", "replace"), self.session)

    @staticmethod
    def missing_key(path: str) -> ApiError:
        in_browser = path in ("/", "/dashboard")
        hint = " In a browser, open /dashboard?key=KEY once; the page then signs in by a cookie." if in_browser else ""
        return ApiError(
            401,
            "Incorrect or missing API key (Authorization: Bearer KEY)." + hint,
            "authentication_error",
            code="invalid_api_key",
        )


def add_access_control(app: FastAPI, policy: AccessPolicy) -> None:
    """Innermost first (Starlette runs the last one added first): the key, then CORS for the listed origins
    (a preflight carries no key), then the Host check around both."""
    app.add_middleware(KeyCheck, policy=policy)
    if policy.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(policy.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            max_age=600,
        )
    app.add_middleware(HostCheck, policy=policy)
