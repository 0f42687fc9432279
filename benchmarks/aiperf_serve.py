"""NVIDIA AIPerf against `cloudmatrix serve` on loopback, once: the benchmark's own view of TTFT, inter-token
latency and throughput beside the simulation's (`/metrics`, vLLM's series). AIPerf is not a project
dependency; install it in a venv of its own (its pins differ from the project's) and pass its executable.

Run: python benchmarks/aiperf_serve.py --aiperf /path/to/venv/bin/aiperf [--requests 200] [--concurrency 16]
Prints one JSON object: the command, AIPerf's summary metrics and the server's, and the process CPU seconds."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MODEL = "deepseek-ai/DeepSeek-R1"
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def word_tokenizer(directory: Path) -> Path:
    """A local Hugging Face tokenizer (nothing downloaded): one token per whitespace-separated word, the
    words `serve` streams in its vocabulary, anything else one unknown token. AIPerf and `serve` both count
    with it, so prompt and output lengths agree on both sides."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from cloudmatrix.emulator.text import WORDS

    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "model_max_length": 1 << 20}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def start_serve(port: int, tokenizer: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--port", str(port), "--api-key", KEY]
    cmd += ["--served-model-name", MODEL, "--tokenizer", str(tokenizer / "tokenizer.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("serve did not start")


def aiperf_command(aiperf: str, port: int, args: argparse.Namespace, out: Path, tokenizer: Path) -> list[str]:
    return [
        aiperf, "profile", "--model", MODEL, "--tokenizer", str(tokenizer), "--url", f"http://127.0.0.1:{port}",
        "--endpoint-type", "chat", "--streaming", "--api-key", KEY,
        "--synthetic-input-tokens-mean", str(args.isl), "--synthetic-input-tokens-stddev", "0",
        "--output-tokens-mean", str(args.osl), "--output-tokens-stddev", "0", "--extra-inputs", "ignore_eos:true",
        "--concurrency", str(args.concurrency), "--request-count", str(args.requests), "--random-seed", "1",
        "--artifact-dir", str(out),
    ]  # fmt: skip


def summary(export: dict) -> dict[str, float]:
    """AIPerf's record metrics (ms, tokens/s) by tag: avg, p50, p99."""
    out = {}
    records = export.get("records", export)
    for tag in ("time_to_first_token", "inter_token_latency", "request_latency", "output_token_throughput",
                "request_throughput", "output_sequence_length", "request_count"):  # fmt: skip
        m = records.get(tag)
        if isinstance(m, dict):
            out.update({f"{tag}_{k}": m[k] for k in ("avg", "p50", "p99") if k in m and m[k] is not None})
    return out


def server_view(port: int) -> dict[str, float]:
    """The simulation's own means from vLLM's histograms on /metrics (seconds)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    out = {}
    for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds"):
        total = sum(float(v) for v in re.findall(rf"^{name}_sum{{[^}}]*}} (\S+)$", text, re.M))
        count = sum(float(v) for v in re.findall(rf"^{name}_count{{[^}}]*}} (\S+)$", text, re.M))
        if count:
            out[name.split(":")[1].removesuffix("_seconds") + "_mean_ms"] = 1e3 * total / count
            out[name.split(":")[1].removesuffix("_seconds") + "_count"] = count
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--aiperf", required=True)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--isl", type=int, default=1024)
    p.add_argument("--osl", type=int, default=128)
    args = p.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = word_tokenizer(Path(tmp) / "tokenizer")
        proc = start_serve(port, tokenizer)
        try:
            cmd = aiperf_command(args.aiperf, port, args, Path(tmp) / "artifacts", tokenizer)
            env = dict(os.environ)  # not HF_HUB_OFFLINE: AIPerf then reads only the hub cache, not a directory
            run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            exports = sorted(Path(tmp).rglob("profile_export_aiperf.json"))
            result = {"returncode": run.returncode, "command": " ".join(cmd[1:])}
            if exports:
                result["aiperf"] = summary(json.loads(exports[0].read_text()))
            else:
                result["stderr_tail"] = (run.stderr or run.stdout)[-2000:]
            result["serve"] = server_view(port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["children_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
