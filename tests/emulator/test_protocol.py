"""The OpenAI protocol beyond one choice: `n` choices, vLLM's continuous usage stats, cached prompt tokens
from the EMS cache, a local tokenizer; and the bounded per-request state of a long-running server."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from cloudmatrix.emulator.engine import HISTORY, RealtimeEngine
from cloudmatrix.emulator.schemas import MAX_CHOICES
from cloudmatrix.emulator.text import HFTokens, count_chat_tokens
from cloudmatrix.sim.scenario import load_scenario
from tests.emulator.conftest import API_KEY, Server, _serve

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _events(r: httpx.Response) -> list[dict]:
    lines = [ln.removeprefix("data: ") for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def test_n_choices_streamed_and_not(server: Server) -> None:
    body = {"model": "deepseek-r1", "prompt": "hello there", "max_tokens": 6, "n": 3}
    r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=body, timeout=60)
    out = r.json()
    assert r.status_code == 200, r.text
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert all(len(c["text"].split()) == 6 for c in out["choices"])
    assert out["usage"]["completion_tokens"] == 18 and out["usage"]["prompt_tokens"] == 3

    body |= {"stream": True, "stream_options": {"include_usage": True}}
    r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=body, timeout=60)
    events = _events(r)
    words = {i: 0 for i in range(3)}
    finished = set()
    for e in events[:-1]:
        (choice,) = e["choices"]
        words[choice["index"]] += len(choice["text"].split())
        if choice["finish_reason"] == "length":
            finished.add(choice["index"])
    assert words == {0: 6, 1: 6, 2: 6} and finished == {0, 1, 2}
    assert events[-1]["usage"]["completion_tokens"] == 18

    too_many = dict(body, n=MAX_CHOICES + 1)
    r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=too_many, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_continuous_usage_stats_count_up_on_every_chunk(server: Server) -> None:
    body = {
        "model": "deepseek-r1",
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    events = _events(httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, json=body, timeout=60))
    counts = [e["usage"]["completion_tokens"] for e in events]
    assert all("usage" in e for e in events)
    assert counts == sorted(counts) and counts[-1] == 5
    assert all(
        e["usage"]["total_tokens"] == e["usage"]["prompt_tokens"] + e["usage"]["completion_tokens"] for e in events
    )


@pytest.fixture(scope="module")
def ems_server() -> Iterator[Server]:
    yield from _serve("cm384-ems", "--speed", "20")


def test_cached_tokens_come_from_the_ems_cache(ems_server: Server) -> None:
    body = {"model": "deepseek-r1", "prompt": "shared document. " * 600, "max_tokens": 2}
    first = httpx.post(f"{ems_server.url}/v1/completions", headers=AUTH, json=body, timeout=60).json()
    second = httpx.post(f"{ems_server.url}/v1/completions", headers=AUTH, json=body, timeout=60).json()
    prompt = first["usage"]["prompt_tokens"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    # whole 512-token blocks of the prompt, except the last token (it must be computed to sample)
    assert cached == (prompt // 512) * 512 or cached == prompt - 1, (cached, prompt)
    assert cached > 0


def _word_tokenizer(path: Path) -> Path:
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_a_local_tokenizer_counts_prompts(tmp_path: Path) -> None:
    tokens = HFTokens(_word_tokenizer(tmp_path / "tokenizer.json"))
    assert tokens.count("hello world hello unknownword") == 4
    assert count_chat_tokens(["hello world"], tokens) == 2 + 3 + 3
    assert len(tokens.blocks("hello " * 10, 4)) == 3


def test_serve_with_a_tokenizer_and_a_broken_one(tmp_path: Path) -> None:
    path = _word_tokenizer(tmp_path / "tokenizer.json")
    server = next(_serve("--tokenizer", str(path)))
    try:
        body = {"model": "deepseek-r1", "prompt": "hello world hello", "max_tokens": 1}
        r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=body, timeout=30)
        assert r.json()["usage"]["prompt_tokens"] == 3
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}')
    for arg in (str(bad), str(tmp_path / "missing.json"), str(tmp_path)):
        p = subprocess.run(
            [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--tokenizer", arg],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


async def _run_many(engine: RealtimeEngine, count: int) -> list[str]:
    rids = []
    for _ in range(count):
        stream = engine.submit(64, 2)
        rids.append(stream.rid)
        while (await stream.queue.get()) is not None:
            pass
    return rids


def test_a_long_run_keeps_its_table_and_timelines_bounded() -> None:
    """Rows of finished requests are reused and only the last HISTORY timelines are kept, so memory stays
    flat however many requests a server answers."""
    import asyncio

    engine = RealtimeEngine(load_scenario("cm384-paper"), speed=2000.0)

    async def main() -> list[str]:
        engine.start()
        rids = await _run_many(engine, HISTORY + 50)
        await engine.stop()
        return rids

    rids = asyncio.run(main())
    assert len(engine.sim.table) <= 4  # one request at a time: its row is reused
    assert len(engine.history) == HISTORY
    assert engine.timeline(rids[0]) is None and engine.timeline(rids[50]) is not None
    last = engine.timeline(rids[-1])
    assert last is not None and last["state"] == "done" and last["max_tokens"] == 2
    assert engine.sim.rec.limit is not None


def test_first_byte_or_a_429_within_a_second(tight_server: Server) -> None:
    """At a fifth of real time the first token takes seconds, but the stream's first byte (its headers and
    the role chunk) comes at once, and a request beyond the deployment's slots gets its 429 at once."""
    import time

    body = {"model": "deepseek-r1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "stream": True}
    with httpx.Client(timeout=30) as client:
        start = time.perf_counter()
        with client.stream("POST", f"{tight_server.url}/v1/chat/completions", headers=AUTH, json=body) as r:
            chunks = r.iter_bytes()  # held: a dropped iterator closes the response (and the server frees it)
            first = next(chunks)
            first_byte_s = time.perf_counter() - start
            assert r.status_code == 200 and first.startswith(b"data: ")
            start = time.perf_counter()
            refused = client.post(f"{tight_server.url}/v1/chat/completions", headers=AUTH, json=body)
            refused_s = time.perf_counter() - start
    assert first_byte_s < 1.0 and refused.status_code == 429 and refused_s < 1.0
    assert int(refused.headers["retry-after"]) >= 1


def test_rolling_window_percentiles_and_expiry() -> None:
    from cloudmatrix.emulator.metrics import RollingWindow

    now = [1000.0]
    w = RollingWindow(seconds=60, clock=lambda: now[0])
    for i in range(1, 101):  # 1..100 ms, one each
        w.observe("tpot", i / 1000)
    p = w.percentiles_ms("tpot")
    assert p["p50"] == pytest.approx(50, abs=5) and p["p99"] == pytest.approx(99, abs=10)
    w.observe("tpot", 0.020, 100)  # token-weighted: a chunk of 100 tokens at 20 ms
    assert w.percentiles_ms("tpot")["p50"] == pytest.approx(20, abs=2.5)
    w.add_tokens(600)
    assert w.snapshot()["tokens_per_s"] == 0  # the second under way is not over
    now[0] += 5
    w.add_tokens(300)
    now[0] += 20
    # per second of streaming, not diluted by the idle seconds between (the issue: 442 shown for 955 pulled)
    assert w.snapshot()["tokens_per_s"] == (600 + 300) / 2
    now[0] += 61  # a minute later nothing is left
    assert w.percentiles_ms("tpot")["p50"] is None and w.snapshot()["tokens_per_s"] == 0


def test_dashboard_and_its_stats(server: Server) -> None:
    r = httpx.get(f"{server.url}/", headers=AUTH, follow_redirects=False, timeout=10)
    assert r.status_code in (302, 307) and r.headers["location"] == "/dashboard"
    page = server.get("/dashboard")
    assert (
        page.status_code == 200
        and "/v1/cloudmatrix/stats" in page.text
        and "http" not in page.text.split("<script>")[1]
    )
    body = {"model": "deepseek-r1", "prompt": "hello", "max_tokens": 4}
    httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=body, timeout=30)
    time.sleep(1.05)  # tokens/s counts whole seconds
    s = server.get("/v1/cloudmatrix/stats").json()
    assert {"outstanding", "running", "queue_depth", "kv_occupancy", "tokens_per_s", "ttft_ms", "tpot_ms"} <= set(s)
    assert s["tokens_per_s"] > 0 and s["ttft_ms"]["p50"] > 0 and s["completed"] >= 1
