"""The emulator against real clients on loopback: the official openai client, an asyncio/httpx load
generator, and raw HTTP for the error cases. Timing tolerance: 10 % of the simulated value plus 15 ms of
client and HTTP overhead (measured here: the openai Python client on loopback adds 6-11 ms to TTFT; the
inter-token gaps match within 3 %)."""

import asyncio
import json
import signal
import time

import httpx
import numpy as np
import openai
import pytest

from .conftest import API_KEY, start_server

HTTP_OVERHEAD_S = 0.015


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def test_models_and_non_streaming(server) -> None:
    client = _client(server)
    assert [m.id for m in client.models.list().data] == ["deepseek-r1", "deepseek-ai/DeepSeek-R1"]
    chat = client.chat.completions.create(
        model="deepseek-r1", max_tokens=12, messages=[{"role": "user", "content": "x" * 400}]
    )
    assert chat.choices[0].finish_reason == "length" and len(chat.choices[0].message.content.split()) == 12
    assert chat.usage.completion_tokens == 12 and chat.usage.prompt_tokens == 100 + 3 + 3
    done = client.completions.create(model="deepseek-r1", prompt="abcdefgh", max_tokens=5)
    assert done.usage.prompt_tokens == 2 and len(done.choices[0].text.split()) == 5


def _timed_stream(server, client: openai.OpenAI) -> tuple[float, float, float, float]:
    """(measured TTFT, measured mean gap per token, simulated TTFT, simulated TPOT) of one streamed request."""
    start = time.perf_counter()
    arrivals, tokens, rid, usage = [], 0, None, None
    stream = client.chat.completions.create(
        model="deepseek-r1",
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "y" * 2000}],
    )
    for chunk in stream:
        rid = rid or chunk.id  # chatcmpl-<random id>: the timeline answers to the response id
        usage = chunk.usage or usage
        if chunk.choices and chunk.choices[0].delta.content:
            n = len(chunk.choices[0].delta.content.split())
            arrivals.append((time.perf_counter(), n))
            tokens += n
    assert tokens == 40 and usage is not None and usage.completion_tokens == 40
    sim = server.get(f"/v1/cloudmatrix/requests/{rid}").json()
    assert sim["state"] == "done" and sim["speed"] == 1.0
    ttft = arrivals[0][0] - start
    gap = (arrivals[-1][0] - arrivals[0][0]) / (tokens - arrivals[0][1])
    return ttft, gap, sim["ttft_s"], sim["tpot_s"]


def test_streaming_pace_matches_the_simulation(server) -> None:
    client = _client(server)
    _timed_stream(server, client)  # warm the client, the connection and the server's step-cost cache
    runs = np.array([_timed_stream(server, client) for _ in range(5)])  # one at a time: low load
    ttft, gap, ttft_pred, tpot_pred = np.median(runs, axis=0)
    assert abs(ttft - ttft_pred) <= 0.1 * ttft_pred + HTTP_OVERHEAD_S, (ttft, ttft_pred)
    assert abs(gap - tpot_pred) <= 0.1 * tpot_pred + HTTP_OVERHEAD_S, (gap, tpot_pred)


def test_load_generator(server) -> None:
    async def one(client: httpx.AsyncClient) -> int:
        body = {"model": "deepseek-r1", "prompt": "z" * 800, "max_tokens": 16, "stream": True}
        got = 0
        async with client.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    got += 1 if '"text": " ' in line else 0
        return got

    async def main() -> list[int]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            return await asyncio.gather(*(one(client) for _ in range(30)))

    chunks = asyncio.run(main())
    assert all(c >= 8 for c in chunks)  # 16 tokens arrive in chunks of 1 or 2 (MTP)
    assert server.get("/health").json()["outstanding"] == 0


def _post(server, body: bytes | str, headers: dict | None = None, path: str = "/v1/chat/completions"):
    h = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", **(headers or {})}
    return httpx.post(f"{server.url}{path}", content=body, headers=h, timeout=10)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("{not json", 400, "not valid JSON"),
        ('["a list"]', 400, "must be a JSON object"),
        ('{"model": "deepseek-r1", "max_tokens": ' + "9" * 5000 + "}", 400, "4,300 digits"),  # int() refuses it
        ('{"model": "deepseek-r1", "messages": [{"role": "user", "content": "a"}], "max_tokens": true}', 400, "true"),
        ('{"model": "deepseek-r1"}', 400, "messages"),
        ('{"model": "deepseek-r1", "messages": [], "max_tokens": 5}', 400, "messages"),
        (
            '{"model": "deepseek-r1", "messages": [{"role": "user", "content": "a"}], "max_tokens": 0}',
            400,
            "max_tokens",
        ),
        ('{"model": "deepseek-r1", "messages": [{"role": "wizard", "content": "a"}]}', 400, "role"),
        ('{"model": "gpt-9", "messages": [{"role": "user", "content": "a"}]}', 404, "does not exist"),
    ],
)
def test_bad_requests(server, body, status, fragment) -> None:
    r = _post(server, body)
    assert r.status_code == status
    err = r.json()["error"]
    assert fragment in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_auth_and_size_limits(server) -> None:
    ok = '{"model": "deepseek-r1", "messages": [{"role": "user", "content": "a"}], "max_tokens": 1}'
    assert _post(server, ok, {"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    r = _post(server, '{"model": "deepseek-r1", "messages": [{"role": "user", "content": "' + "a" * 70000 + '"}]}')
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_rate_limit_429(tight_server) -> None:
    client = _client(tight_server)
    stream = client.chat.completions.create(
        model="deepseek-r1", max_tokens=50, stream=True, messages=[{"role": "user", "content": "hold"}]
    )
    next(iter(stream))
    r = _post(tight_server, '{"model": "deepseek-r1", "messages": [{"role": "user", "content": "a"}]}')
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    stream.close()


def test_disconnect_frees_the_simulated_request(server) -> None:
    body = {"model": "deepseek-r1", "messages": [{"role": "user", "content": "q"}], "max_tokens": 500, "stream": True}
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    ) as r:
        for line in r.iter_lines():
            rid = json.loads(line[6:])["id"] if line.startswith("data: {") else None
            if '"content": " ' in line:
                break
    for _ in range(100):
        if server.get("/health").json()["outstanding"] == 0:
            break
        time.sleep(0.02)
    assert server.get("/health").json()["outstanding"] == 0
    assert server.get(f"/v1/cloudmatrix/requests/{rid}").json()["state"] == "cancelled"


def test_metrics_exposition(server) -> None:
    text = server.get("/metrics").text
    for name in (
        "cloudmatrix_requests_total",
        "cloudmatrix_generated_tokens_total",
        "cloudmatrix_ttft_seconds_bucket",
        "cloudmatrix_tpot_seconds_bucket",
        "cloudmatrix_queue_depth",
        "cloudmatrix_kv_occupancy_ratio",
    ):
        assert name in text
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_sigterm_finishes_in_flight_requests_then_exits() -> None:
    server = start_server()
    body = {"model": "deepseek-r1", "prompt": "p", "max_tokens": 30, "stream": True}
    lines: list[str] = []
    try:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=20) as r:
            for line in r.iter_lines():
                if not lines:
                    server.proc.send_signal(signal.SIGTERM)  # mid-stream
                lines.append(line)
        assert "data: [DONE]" in lines
        assert server.proc.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after draining
        assert "Traceback" not in (server.proc.stderr.read() if server.proc.stderr else "")
    finally:
        server.proc.kill()
