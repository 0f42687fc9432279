"""Who may talk to `serve`: the key guards every route but /health (by header, or by the dashboard's cookie
for reading), the Host allow-list refuses other names before any route, pages of other origins get no CORS
and cannot post, response ids are random and name the request's timeline, every user-controlled string is
escaped in the HTML, and empty keys or malformed lists are refused at start-up. In-process (Starlette's
TestClient) except the start-up checks, which run the command."""

import html
import json
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from typer.testing import CliRunner

from cloudmatrix.cli.app import app as cli
from cloudmatrix.emulator.app import ServeConfig, create_app
from cloudmatrix.emulator.dashboard import CSP, page
from cloudmatrix.emulator.engine import RealtimeEngine
from cloudmatrix.emulator.guard import COOKIE, LOCAL_HOSTS, host_name, parse_hosts, parse_origins, requested_host
from cloudmatrix.inputs import InputError
from cloudmatrix.sim.scenario import load_scenario

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BASE = "http://localhost:8000"
HOSTILE = "<img src=x onerror=alert(1)>"  # as a model file's name
HOSTILE_NAME = '</title><script>alert("n")</script>\'&'  # as a scenario's name
COMPLETION = {"model": "deepseek-r1", "prompt": "hello", "max_tokens": 2}
runner = CliRunner()


def _client(tmp: Path | None = None, **config: object) -> TestClient:
    overrides = []
    model = "deepseek-r1"
    if tmp is not None:  # a model config whose file name is markup, and a scenario named with markup
        path = tmp / f"{HOSTILE}.json"
        shutil.copy(Path(__file__).parents[2] / "src/cloudmatrix/catalog/data/models/deepseek-r1.json", path)
        model = str(path)
        overrides = [f"model={model}", f"name={HOSTILE_NAME}"]
    sc = load_scenario("cm384-paper", overrides)
    engine = RealtimeEngine(sc, speed=50.0)
    settings = {"model_id": model, "api_key": KEY} | config
    return TestClient(create_app(engine, ServeConfig(**settings)), base_url=BASE)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with _client() as c:
        yield c


def _is_openai_error(r, status: int) -> bool:
    body = r.json()
    return r.status_code == status and set(body["error"]) == {"message", "type", "param", "code"}


# ---- the key ------------------------------------------------------------------------------------------
def _every_path(client: TestClient) -> list[tuple[str, str]]:
    """Every route the app has (its OpenAPI schema and the pages outside it), plus paths it does not have."""
    schema = client.get("/openapi.json", headers=AUTH).json()
    paths = [(m.upper(), p.replace("{rid}", "x")) for p, ops in schema["paths"].items() for m in ops]
    return paths + [("GET", p) for p in ("/", "/dashboard", "/openapi.json", "/docs", "/redoc", "/nope", "/v1/x")]


def test_every_route_but_health_needs_the_key(client: TestClient) -> None:
    paths = _every_path(client)
    assert ("GET", "/v1/cloudmatrix/stats") in paths and ("POST", "/v1/completions") in paths
    for method, path in paths:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Cookie": f"{COOKIE}=x"}):
            r = client.request(method, path, headers=headers, json=COMPLETION)
            if path == "/health":
                assert r.status_code == 200
            else:
                assert _is_openai_error(r, 401) and r.json()["error"]["code"] == "invalid_api_key", (method, path)
    assert client.get("/v1/models", headers={"Authorization": f"bearer {KEY}"}).status_code == 200


def test_public_metrics_opens_only_metrics() -> None:
    with _client(public_metrics=True) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/cloudmatrix/stats").status_code == 401 and c.get("/openapi.json").status_code == 401


def test_no_docs_pages_and_the_schema_behind_the_key(client: TestClient) -> None:
    assert client.get("/docs", headers=AUTH).status_code == 404
    assert client.get("/redoc", headers=AUTH).status_code == 404
    assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "cloudmatrix emulator"


def test_the_dashboard_signs_in_once_by_a_cookie_that_only_reads() -> None:
    with _client() as c:
        wrong = c.get("/dashboard?key=nope", follow_redirects=False)
        assert _is_openai_error(wrong, 401) and "set-cookie" not in wrong.headers
        r = c.get(f"/dashboard?key={KEY}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and KEY not in cookie
        assert c.get("/dashboard").status_code == 200  # the client keeps the cookie, as a browser does
        assert c.get("/v1/cloudmatrix/stats").json()["completed"] == 0
        assert c.post("/v1/completions", json=COMPLETION).status_code == 401  # no writing by cookie
        session = c.cookies[COOKIE]
        for forged in (session[:-1] + ("1" if session[-1] == "0" else "0"), KEY, ""):
            c.cookies.clear()
            c.cookies.set(COOKIE, forged)
            assert c.get("/v1/cloudmatrix/stats").status_code == 401


# ---- Host and Origin ------------------------------------------------------------------------------------
def test_only_listed_hosts_are_answered() -> None:
    with _client(allowed_hosts=parse_hosts(["api.example.org"], "10.1.2.3")) as c:
        for host in ("localhost:8000", "LOCALHOST", "127.0.0.1:1", "[::1]:8000", "10.1.2.3", "api.example.org:443"):
            assert c.get("/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.com", "localhost.evil.com", "api.example.org.evil", "127.0.0.2", "[::2]", "a:b", ""):
            for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/completions")):
                r = c.request(method, path, headers=AUTH | {"Host": host}, json=COMPLETION)
                assert _is_openai_error(r, 400) and r.json()["error"]["code"] == "host_not_allowed", (host, path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z0-9-]{1,12}){0,3}(:[0-9]{1,5})?", fullmatch=True))
def test_any_other_host_name_is_refused(client: TestClient, host: str) -> None:
    allowed = requested_host(host.encode()) in {"localhost", "127.0.0.1"}
    assert (client.get("/health", headers={"Host": host}).status_code == 200) == allowed


def test_host_parsing() -> None:
    assert requested_host(None) is None and requested_host(b"[::1]x") is None and requested_host(b"a:1:2") is None
    assert requested_host(b"[0:0::1]:80") == "[::1]" and requested_host(b"Example.ORG.:8") == "example.org"
    assert host_name("::1") == "[::1]" and host_name("-bad.com") is None and host_name("a" * 64) is None
    assert parse_hosts(None, "0.0.0.0") == frozenset(LOCAL_HOSTS) | {"0.0.0.0"}
    assert parse_hosts(["a.com,b.com", "c.com"], "::1") == frozenset(LOCAL_HOSTS) | {"a.com", "b.com", "c.com"}
    assert parse_origins(["https://A.com:443,http://b.com:3000/"]) == {"https://a.com", "http://b.com:3000"}
    for bad in ("a b", "a.com:80", "http://a.com", ""):
        with pytest.raises(InputError, match="--allowed-hosts"):
            parse_hosts([bad], "127.0.0.1")
    for bad in (
        "a.com",
        "ftp://a.com",
        "http://a.com/x",
        "http://a.com?q",
        "http://u@a.com",
        "http://a.com:99999",
        "*",
    ):
        with pytest.raises(InputError, match="--allowed-origins"):
            parse_origins([bad])


def test_no_cross_origin_access_unless_listed() -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with _client() as c:  # the default: no CORS at all, and no page of another origin may post
        r = c.options("/v1/completions", headers=preflight | {"Origin": "http://evil.com"})
        assert "access-control-allow-origin" not in r.headers
        r = c.post("/v1/completions", headers=AUTH | {"Origin": "http://evil.com"}, json=COMPLETION)
        assert _is_openai_error(r, 403) and r.json()["error"]["code"] == "origin_not_allowed"
        assert c.post("/v1/completions", headers=AUTH | {"Origin": "null"}, json=COMPLETION).status_code == 403
        assert c.post("/v1/completions", headers=AUTH | {"Origin": BASE}, json=COMPLETION).status_code == 200
        assert c.post("/v1/completions", headers=AUTH, json=COMPLETION).status_code == 200  # no Origin: no browser
    with _client(allowed_origins=parse_origins(["http://app.example:3000"])) as c:
        ok = c.options("/v1/completions", headers=preflight | {"Origin": "http://app.example:3000"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://app.example:3000"
        r = c.options("/v1/completions", headers=preflight | {"Origin": "http://evil.com"})
        assert "access-control-allow-origin" not in r.headers
        r = c.post("/v1/completions", headers=AUTH | {"Origin": "http://app.example:3000"}, json=COMPLETION)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example:3000"
        assert (
            c.post("/v1/completions", headers=AUTH | {"Origin": "http://evil.com"}, json=COMPLETION).status_code == 403
        )


# ---- timelines ------------------------------------------------------------------------------------------
def test_response_ids_are_random_and_name_their_timeline(client: TestClient) -> None:
    ids = [client.post("/v1/completions", headers=AUTH, json=COMPLETION).json()["id"] for _ in range(3)]
    chat = {"model": "deepseek-r1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    ids.append(client.post("/v1/chat/completions", headers=AUTH, json=chat).json()["id"])
    assert all(re.fullmatch(r"(chat)?cmpl-[A-Za-z0-9_-]{22}", i) for i in ids) and len(set(ids)) == 4
    for rid in ids:
        whole = client.get(f"/v1/cloudmatrix/requests/{rid}", headers=AUTH).json()
        bare = client.get(f"/v1/cloudmatrix/requests/{rid.split('-', 1)[1]}", headers=AUTH).json()
        assert whole == bare and whole["state"] == "done" and whole["max_tokens"] == 2
        assert client.get(f"/v1/cloudmatrix/requests/{rid}").status_code == 401
    for guess in ("0", "1", "3", "cmpl-0", "chatcmpl-3"):  # the old sequential ids name nothing
        assert _is_openai_error(client.get(f"/v1/cloudmatrix/requests/{guess}", headers=AUTH), 404)


# ---- escaping and headers -------------------------------------------------------------------------------
class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.h1 = ""
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        self._in_h1 = tag == "h1"

    def handle_endtag(self, tag: str) -> None:
        self._in_h1 = False if tag == "h1" else self._in_h1

    def handle_data(self, data: str) -> None:
        self.h1 += data if self._in_h1 else ""


def _parsed(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    return parser


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.text(max_size=40), min_size=4, max_size=4))
def test_any_name_reaches_the_dashboard_as_text(names: list[str]) -> None:
    """Whatever the model, scenario, system and stack are called, the page has the same elements and shows
    the model's name as text."""
    plain = _parsed(page("m", "s", "y", "k"))
    got = _parsed(page(*names))
    assert got.tags == plain.tags
    assert got.h1 == "cloudmatrix serve: " + names[0]


def test_the_csp_allows_exactly_the_pages_script_and_style() -> None:
    import base64
    import hashlib

    text = page("m", "s", "y", "k")
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        body = text.split(f"<{tag}>")[1].split(f"</{tag}>")[0]
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}';" in CSP
    assert "default-src 'none'" in CSP and "unsafe" not in CSP and "http" not in CSP


def test_hostile_names_never_reach_a_page_unescaped(tmp_path: Path) -> None:
    """The dashboard and every error page, with a model file and a scenario named in markup and markup in
    the URL: HTML only on the dashboard, escaped there; every response says nosniff, no-referrer and a CSP."""
    with _client(tmp_path) as c:
        dash = c.get("/dashboard", headers=AUTH)
        assert html.escape(HOSTILE) in dash.text and html.escape(HOSTILE_NAME) in dash.text
        assert "script-src 'sha256-" in dash.headers["content-security-policy"]
        responses = [dash]
        for path in (f"/{HOSTILE}", f"/v1/cloudmatrix/requests/{HOSTILE}", f"/dashboard?key={HOSTILE}"):
            responses += [c.get(path), c.get(path, headers=AUTH), c.delete(path, headers=AUTH)]
        responses.append(c.get("/health", headers={"Host": HOSTILE}))
        body = {"model": HOSTILE, "prompt": HOSTILE_NAME}
        responses.append(c.post("/v1/completions", headers=AUTH, content=json.dumps(body)))
        responses.append(c.post("/v1/completions", headers=AUTH | {"Origin": HOSTILE}, content=json.dumps(body)))
        assert {r.status_code for r in responses} >= {200, 400, 401, 403, 404, 405}
        for r in responses:
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            if r.headers["content-type"].startswith("text/html"):
                assert HOSTILE not in r.text and HOSTILE_NAME not in r.text and "<script>alert" not in r.text
            else:
                assert r.headers["content-type"] == "application/json", r.headers["content-type"]


# ---- start-up ------------------------------------------------------------------------------------------
def _refused(args: list[str], env: dict[str, str] | None = None) -> str:
    res = runner.invoke(cli, ["serve", *args], env=env)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(res.stderr.strip().splitlines()) == 1
    return res.stderr


@settings(max_examples=25, deadline=None)
@given(key=st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003", max_size=4))
def test_an_empty_key_is_refused_never_taken_for_none(key: str) -> None:
    assert "--api-key: is empty" in _refused(["--api-key", key])
    assert "$CLOUDMATRIX_API_KEY: is empty" in _refused([], env={"CLOUDMATRIX_API_KEY": key})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key", " key"], "--api-key: starts or ends with whitespace"),
        (["--api-key", "k\x01y"], "--api-key: holds a control character"),
        (["--allowed-hosts", "evil.com:80"], "--allowed-hosts: got 'evil.com:80'"),
        (["--allowed-hosts", "a.com,,b.com"], "--allowed-hosts: got ''"),
        (["--allowed-origins", "evil.com"], "--allowed-origins: got 'evil.com'"),
        (["--allowed-origins", "*"], "--allowed-origins: got '*'"),
    ],
)
def test_bad_access_options_are_refused_in_one_line(args: list[str], message: str) -> None:
    out = _refused(args)
    assert message in out
    assert args[0] != "--api-key" or args[1] not in out  # a key is never echoed
