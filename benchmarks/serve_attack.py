"""`cloudmatrix serve` under connection attacks on loopback, with a descriptor limit of 1,024 in the server.

Run: python benchmarks/serve_attack.py [--seconds 30] [--slowloris 300] [--idle 1000] [--kept-alive 500]
     [--floods 100] [--serve-arg=--max-connections=500 ...]
First probes an idle server with normal requests (from 4 concurrent loops, a new connection each: GET /health
and a non-streamed completion of 8 tokens), then probes it again while the attack runs for the same time:
  slowloris   connections that send a request header one byte a second and never finish it;
  idle        connections that connect and send nothing;
  kept-alive  connections that make one request with keep-alive and then send nothing;
  floods      connections that each send a 4 MiB header that never ends.
Every attacker starts at a seeded moment within the warm-up and reconnects when the server closes it (after a
pause, so the attack stays bounded), and all of it stops at the deadline. Prints the probes' p50/p99 idle vs
under attack, their errors, the server's CPU and RSS (before, peak, after), and what the attackers saw. The
attackers run in their own process at nice 19. Only ever connects to 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import time
from collections import Counter

import httpx
from serve import cpu_s, free_port, rss_mb

HOST = "127.0.0.1"  # loopback only, by construction
SERVER_DESCRIPTORS = 1024
FLOOD_BYTES = 4 * 1024 * 1024
RECONNECT_PAUSE_S = 1.0


def limit_descriptors() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_DESCRIPTORS, hard))


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


def probe_requests() -> dict[str, bytes]:
    body = json.dumps({"model": "deepseek-r1", "prompt": "x" * 400, "max_tokens": 8}).encode()
    return {
        "health": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "completion": b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    }


async def probe(port: int, seconds: float, loops: int) -> dict[str, list[float] | int]:
    """Normal requests for `seconds` from `loops` concurrent loops, each on a new connection."""
    out: dict[str, list[float] | int] = {"health": [], "completion": [], "errors": 0}
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            for name, request in probe_requests().items():
                start = time.perf_counter()
                try:
                    data = await asyncio.wait_for(exchange(port, request), timeout=10)
                    ok = data.startswith(b"HTTP/1.1 200")
                except (TimeoutError, OSError):
                    ok = False
                if ok:
                    latencies = out[name]
                    assert isinstance(latencies, list)
                    latencies.append(time.perf_counter() - start)
                else:
                    out["errors"] = int(out["errors"]) + 1

    await asyncio.gather(*(loop() for _ in range(loops)))
    return out


async def attacker(kind: str, port: int, deadline: float, start_s: float, seen: Counter[str], seed: int) -> None:
    """One attacker, starting within the warm-up and pausing 0.5-1.5 s between connections (seeded), so the
    requests of the kept-alive ones come spread out rather than as bursts of hundreds at once."""
    rng = random.Random(seed)
    await asyncio.sleep(rng.uniform(0, start_s))
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            seen["connect failed"] += 1
            await asyncio.sleep(RECONNECT_PAUSE_S * rng.uniform(0.5, 1.5))
            continue
        seen[f"{kind} connections"] += 1
        try:
            remaining = deadline - time.perf_counter()
            answer = await asyncio.wait_for(hold(kind, reader, writer), timeout=max(remaining, 0.01))
            seen[f"{kind} closed by server: {answer or 'no answer'}"] += 1
        except TimeoutError:
            pass
        except OSError:
            seen[f"{kind} closed by server: reset"] += 1
        finally:
            writer.close()
        await asyncio.sleep(RECONNECT_PAUSE_S * rng.uniform(0.5, 1.5))


async def hold(kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """Play one attacker until the server closes the connection; returns the status it answered with."""
    if kind == "slowloris":
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while True:
            try:
                return status(await asyncio.wait_for(reader.read(1024), timeout=1.0))
            except TimeoutError:
                writer.write(b"X")
                await writer.drain()
    elif kind == "kept-alive":
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
    elif kind == "flood":
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
        chunk = b"a" * 65536
        for _ in range(FLOOD_BYTES // len(chunk)):
            writer.write(chunk)
            await writer.drain()
    data = await reader.read()
    if kind == "kept-alive":  # its one answer, then the idle close
        data = data[data.find(b"HTTP/1.1", 1) :] if data.count(b"HTTP/1.1") > 1 else b""
    return status(data)


def status(data: bytes) -> str:
    return data[9:12].decode() if data.startswith(b"HTTP/1.1") else ""


def percentiles(xs: list[float]) -> str:
    if not xs:
        return "no answers"
    xs = sorted(xs)
    p50, p99 = xs[len(xs) // 2], xs[min(int(len(xs) * 0.99), len(xs) - 1)]
    return f"p50 {p50 * 1e3:6.1f} ms, p99 {p99 * 1e3:6.1f} ms ({len(xs)} answers)"


async def attack(port: int, kinds: list[str], start_s: float, seconds: float) -> Counter[str]:
    deadline = time.perf_counter() + seconds
    seen: Counter[str] = Counter()
    await asyncio.sleep(seconds if not kinds else 0)  # no attackers: a control run, idle vs idle
    await asyncio.gather(*(attacker(k, port, deadline, start_s, seen, i) for i, k in enumerate(kinds)))
    return seen


def run_attack(port: int, kinds: list[str], start_s: float, seconds: float, out: multiprocessing.Queue) -> None:
    """The attackers' own process at the lowest CPU priority: on a network they would run on other machines,
    and on a shared loopback host their own CPU time must not be what slows the server and the probes."""
    os.nice(19)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(len(kinds) + 256, hard), hard))
    out.put(dict(asyncio.run(attack(port, kinds, start_s, seconds))))


async def measure(port: int, pid: int, args: argparse.Namespace) -> None:
    cpu0 = cpu_s(pid)
    idle = await probe(port, args.seconds, args.probes)
    idle_cpu, rss_before = cpu_s(pid) - cpu0, rss_mb(pid)
    kinds = ["slowloris"] * args.slowloris + ["idle"] * args.idle + ["kept-alive"] * args.kept_alive
    kinds += ["flood"] * args.floods
    results: multiprocessing.Queue = multiprocessing.Queue()
    window = (args.warmup, args.warmup + args.seconds)
    attackers = multiprocessing.Process(target=run_attack, args=(port, kinds, *window, results))
    attackers.start()
    peak = rss_before

    async def watch() -> None:
        nonlocal peak
        while attackers.is_alive():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(args.warmup)  # every attacker has connected by now
    attacker_pid = attackers.pid or 0
    cpu0, attacker_cpu0 = cpu_s(pid), cpu_s(attacker_pid)
    attacked = await probe(port, args.seconds, args.probes)
    attack_cpu, attacker_cpu = cpu_s(pid) - cpu0, cpu_s(attacker_pid) - attacker_cpu0
    seen = results.get(timeout=60)
    attackers.join()
    await watcher
    await asyncio.sleep(1.0)
    print(f"server with a descriptor limit of {SERVER_DESCRIPTORS}; {args.seconds:.0f} s of probes each way")
    print(
        f"attack: {args.slowloris} slowloris, {args.idle} idle, {args.kept_alive} kept-alive after one request, "
        f"{args.floods} floods of a {FLOOD_BYTES // 2**20} MiB header (reconnecting after {RECONNECT_PAUSE_S} s)"
    )
    for name in ("health", "completion"):
        before, under = idle[name], attacked[name]
        assert isinstance(before, list) and isinstance(under, list)
        print(f"  {name:10s} idle:   {percentiles(before)}")
        print(f"  {name:10s} attack: {percentiles(under)}")
    print(f"  probe errors: idle {idle['errors']}, under attack {attacked['errors']}")
    print(
        f"  server CPU: idle {idle_cpu / args.seconds:.0%} of a core, under attack {attack_cpu / args.seconds:.0%}; "
        f"the attackers {attacker_cpu / args.seconds:.0%}"
    )
    print(f"  server RSS: before {rss_before:.0f} MB, peak {peak:.0f} MB, after {rss_mb(pid):.0f} MB")
    for what, n in sorted(seen.items()):
        print(f"  {what}: {n:,}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--probes", type=int, default=4, help="concurrent loops of normal requests")
    ap.add_argument("--slowloris", type=int, default=300)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--kept-alive", type=int, default=500)
    ap.add_argument("--floods", type=int, default=100)
    ap.add_argument("--serve-arg", action="append", default=[], help="an extra flag for serve")
    args = ap.parse_args()
    total = args.slowloris + args.idle + args.kept_alive + args.floods
    if total > 5000 or args.seconds > 600:
        sys.exit("refusing an attack beyond 5,000 connections or 600 s")
    port = free_port()
    command = [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--host", HOST, "--port", str(port)]
    proc = subprocess.Popen(command + args.serve_arg, stderr=subprocess.DEVNULL, preexec_fn=limit_descriptors)
    try:
        for _ in range(400):
            try:
                if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.025)
        asyncio.run(measure(port, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
