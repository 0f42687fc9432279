"""Load test of `cloudmatrix serve` on loopback: N concurrent streaming clients for a fixed time at speed 1.

Run: python benchmarks/serve.py [--clients 500] [--seconds 60] [--max-tokens 64]
Reports achieved requests/s and tokens/s, errors, the server's CPU time and memory, and the growth of its
resident memory between the first 1,000 and the first 10,000 completed requests (target: none beyond caches)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(host: str, port: int, payload: bytes) -> int:
    """One streaming completion over a raw loopback connection (httpx's parsing would make the client,
    not the server, the bottleneck on 2 cores). Returns the completion tokens from the final usage chunk."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (host.encode(), port, len(payload), payload)
        )
        await writer.drain()
        data = await reader.read()  # until the server closes: the whole SSE stream
    finally:
        writer.close()
    if not data.startswith(b"HTTP/1.1 200") or b"data: [DONE]" not in data:
        raise RuntimeError(data[:200].decode(errors="replace"))
    tail = data[data.rindex(b'"completion_tokens": ') + 21 :]
    return int(tail[: tail.index(b",")])


async def run(url: str, pid: int, clients: int, seconds: float, max_tokens: int) -> dict[str, float]:
    host, port = url.removeprefix("http://").split(":")
    stats = {"ok": 0, "errors": 0, "tokens": 0}
    marks: dict[int, float] = {}
    body = {
        "model": "deepseek-r1",
        "prompt": "x" * 1000,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payload = json.dumps(body).encode()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                tokens = await one_request(host, int(port), payload)
                stats["tokens"] += tokens
                stats["ok"] += 1
                for mark in (1000, 10000):
                    if stats["ok"] == mark:
                        marks[mark] = rss_mb(pid)
            except (OSError, RuntimeError, ValueError):
                stats["errors"] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {
        **stats,
        "elapsed_s": elapsed,
        "rss_at_1k_mb": marks.get(1000, float("nan")),
        "rss_at_10k_mb": marks.get(10000, float("nan")),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--port", str(port)], stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.025)
        rss0, cpu0 = rss_mb(proc.pid), cpu_s(proc.pid)
        r = asyncio.run(run(url, proc.pid, args.clients, args.seconds, args.max_tokens))
        cpu = cpu_s(proc.pid) - cpu0
        print(f"{args.clients} streaming clients for {r['elapsed_s']:.0f} s at speed 1 (max_tokens {args.max_tokens})")
        print(
            f"  requests: {r['ok']:,} ok, {r['errors']:,} errors; {r['ok'] / r['elapsed_s']:.1f} req/s, "
            f"{r['tokens'] / r['elapsed_s']:,.0f} tokens/s"
        )
        print(
            f"  server CPU: {cpu:.1f} s ({cpu / r['elapsed_s']:.0%} of one core); RSS start {rss0:.0f} MB, "
            f"end {rss_mb(proc.pid):.0f} MB"
        )
        print(
            f"  RSS after 1,000 requests {r['rss_at_1k_mb']:.0f} MB, after 10,000 {r['rss_at_10k_mb']:.0f} MB "
            f"(growth {r['rss_at_10k_mb'] - r['rss_at_1k_mb']:+.0f} MB)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
