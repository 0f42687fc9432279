"""`serve` against hostile clients: every error is OpenAI's error body with a 4xx status, never a 500 or
FastAPI's own shape; generated bodies end in an answer or a 4xx; the key can come from the environment."""

import json
import os
import subprocess
import sys

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.emulator.conftest import API_KEY, Server, _free_port, start_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)


def _is_openai_error(r: httpx.Response) -> bool:
    body = r.json()
    return set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])


def test_unknown_paths_wrong_methods_and_bad_fields_use_openai_errors(server: Server) -> None:
    for r in (
        httpx.get(f"{server.url}/v1/nope", headers=AUTH),
        httpx.delete(f"{server.url}/v1/completions", headers=AUTH),
        httpx.post(f"{server.url}/v1/completions", headers=AUTH, json={"model": 3, "prompt": []}),
    ):
        assert 400 <= r.status_code < 500 and _is_openai_error(r), r.text


def test_deep_json_surrogates_and_chunked_bodies_are_refused(server: Server) -> None:
    deep = '{"model": "deepseek-r1", "prompt": ' + "[" * 5000 + "]" * 5000 + "}"
    r = httpx.post(f"{server.url}/v1/completions", headers=AUTH | {"content-type": "application/json"}, content=deep)
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"]
    lone = b'{"model": "deepseek-r1", "prompt": "\\ud800"}'
    r = httpx.post(f"{server.url}/v1/completions", headers=AUTH | {"content-type": "application/json"}, content=lone)
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(200):
            yield b" " * 1024

    r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, content=chunks())
    assert r.status_code == 413 and _is_openai_error(r)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(["model", "prompt", "max_tokens", "stream", "n", "messages"]), json_values))
def test_generated_bodies_end_in_an_answer_or_a_4xx(server: Server, body: dict) -> None:
    body.setdefault("model", "deepseek-r1")
    for path in ("/v1/completions", "/v1/chat/completions"):
        payload = dict(body, stream=False, max_tokens=1) if isinstance(body.get("max_tokens"), int) else body
        r = httpx.post(f"{server.url}{path}", headers=AUTH, content=json.dumps(payload), timeout=30)
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert _is_openai_error(r)


def test_the_api_key_can_come_from_the_environment() -> None:
    port = _free_port()
    env = dict(os.environ, CLOUDMATRIX_API_KEY="from-env")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(400):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                import time

                time.sleep(0.025)
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_prompt_that_can_never_fit_is_refused_and_does_not_block_the_next() -> None:
    """600k prompt tokens (4 characters each) exceed what one decode die of the paper deployment can hold
    (about 568k tokens of KV): refused up front with OpenAI's context-length error, and the next request is
    answered at once."""
    server = start_server("--api-key", API_KEY)
    try:
        huge = {"model": "deepseek-r1", "prompt": "abcd" * 600_000, "max_tokens": 16}
        r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=huge, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
        assert "maximum context length is" in r.json()["error"]["message"]
        small = {"model": "deepseek-r1", "prompt": "hello", "max_tokens": 2}
        ok = httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=small, timeout=30)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)
