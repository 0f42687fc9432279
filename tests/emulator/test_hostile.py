"""`serve` against hostile clients: every error is OpenAI's error body with a 4xx status, never a 500 or
FastAPI's own shape; generated bodies end in an answer or a 4xx; the key can come from the environment."""

import json
import os
import subprocess
import sys

import httpx
import pytest
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


def test_sigterm_during_100_live_streams_ends_every_stream_within_the_deadline() -> None:
    """At a twentieth of real time no stream can finish on its own; SIGTERM with a 2 s drain ends all 100 with
    an error event and [DONE], and the process exits within the deadline (plus start-up slack)."""
    import asyncio
    import signal
    import time

    server = start_server("--api-key", API_KEY, "--speed", "0.05", "--drain-timeout", "2")
    ends: list[str] = []

    async def one(client: httpx.AsyncClient) -> None:
        body = {"model": "deepseek-r1", "prompt": "hi", "max_tokens": 200, "stream": True}
        seen: list[str] = []
        async with client.stream("POST", f"{server.url}/v1/completions", json=body, headers=AUTH) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seen.append(line)
        ends.append(" | ".join(seen[-2:]))

    async def main() -> float:
        async with httpx.AsyncClient(timeout=30) as client:
            tasks = [asyncio.create_task(one(client)) for _ in range(100)]
            await asyncio.sleep(1.5)  # every stream is open and waiting for tokens
            sent = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)
            return sent

    try:
        sent = asyncio.run(main())
        server.proc.wait(timeout=10)
        exited = time.perf_counter() - sent
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    assert len(ends) == 100 and all("server_shutdown" in e and e.endswith("data: [DONE]") for e in ends), ends[:2]
    assert exited < 2 + 3  # the drain deadline plus uvicorn's close margin


def test_metrics_agree_with_the_request_timelines_and_labels_stay_fixed() -> None:
    """Streaming load in real time: /metrics' token-weighted TPOT matches the simulated timelines within 2 %, TTFT is
    counted from arrival (never below the simulated TTFT), and endpoint labels are route templates."""
    import asyncio
    import re

    speed = 1.0  # real time: the server keeps pace even on a loaded CI machine
    server = start_server("--api-key", API_KEY, "--speed", str(speed))
    rids: list[str] = []

    async def one(client: httpx.AsyncClient) -> None:
        body = {"model": "deepseek-r1", "prompt": "hello there", "max_tokens": 30, "stream": True}
        async with client.stream("POST", f"{server.url}/v1/completions", json=body, headers=AUTH) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["id"] not in rids:
                    rids.append(json.loads(line[6:])["id"])

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(one(client) for _ in range(20)))

    try:
        asyncio.run(main())
        httpx.get(f"{server.url}/v1/unknown/4", headers=AUTH)  # an unknown path: label 'other'
        timelines = [server.get(f"/v1/cloudmatrix/requests/{i}").json() for i in rids]
        text = server.get("/metrics").text
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)

    def value(name: str) -> float:
        return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))

    wall_tpot = value("cloudmatrix_tpot_seconds_sum") / value("cloudmatrix_tpot_seconds_count")
    sim = sum((t["finish_s"] - t["first_token_s"]) for t in timelines) / sum(t["max_tokens"] - 1 for t in timelines)
    assert wall_tpot == pytest.approx(sim / speed, rel=0.02)
    mean_ttft = value("cloudmatrix_ttft_seconds_sum") / value("cloudmatrix_ttft_seconds_count")
    assert mean_ttft >= 0.9 * sum(t["ttft_s"] for t in timelines) / len(timelines) / speed
    labels = set(re.findall(r'cloudmatrix_requests_total\{endpoint="([^"]+)"', text))
    assert (
        labels
        <= {
            "/v1/completions",
            "/v1/chat/completions",
            "/v1/models",
            "/health",
            "/metrics",
            "other",
            "/v1/cloudmatrix/requests/{rid}",
        }
        and "other" in labels
    )
