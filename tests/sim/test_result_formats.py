"""`simulate --result-format vllm|sglang`: the benchmark's own JSON keys, read by a script written for
`vllm bench serve` results, with figures equal to the simulation's own (TTFT, TPOT, end to end) and an ITL
that adds up to the decode time it splits."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.sim.engine import simulate
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.studies.result_formats import result_json

runner = CliRunner()
SMALL = ["--set", "requests=300", "--set", "workload.output.kind=uniform", "--set", "workload.output.low=16"]
SMALL += ["--set", "workload.output.high=200"]

# The keys `vllm bench serve --save-result` writes by default (vllm/benchmarks/serve.py, without
# --save-detailed, --percentile-metrics ttft,tpot,itl,e2el, --metric-percentiles 99).
VLLM_KEYS = (
    "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
    "request_goodput", "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
    "max_concurrent_requests",
    *(f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p99")),
)  # fmt: skip
# SGLang bench_serving's result line (python/sglang/bench_serving.py)
SGLANG_KEYS = (
    "backend", "dataset_name", "request_rate", "max_concurrency", "duration", "completed", "total_input_tokens",
    "total_output_tokens", "total_output_tokens_retokenized", "request_throughput", "input_throughput",
    "output_throughput", "total_throughput",
    *(f"{s}_{m}_ms" for m in ("e2e_latency", "ttft", "tpot", "itl") for s in ("mean", "median", "std", "p90", "p99")),
    "concurrency",
)  # fmt: skip


def summarize_vllm_bench(path: Path) -> dict[str, float]:
    """What a comparison script written for `vllm bench serve` JSON does with a result file."""
    d = json.loads(path.read_text())
    return {
        "req/s": d["request_throughput"],
        "out tok/s": d["output_throughput"],
        "tok/s": d["total_token_throughput"],
        "ttft p50/p99": (d["median_ttft_ms"], d["p99_ttft_ms"]),
        "tpot mean": d["mean_tpot_ms"],
        "itl p99": d["p99_itl_ms"],
        "e2el mean": d["mean_e2el_ms"],
        "ok": d["completed"] / d["num_prompts"],
    }


@pytest.fixture(scope="module")
def run():
    sc = load_scenario(None, [a for a in SMALL if a != "--set"])
    return sc, simulate(sc)


def test_a_vllm_bench_script_reads_the_file(tmp_path: Path) -> None:
    out = tmp_path / "twin.json"
    res = runner.invoke(app, ["simulate", *SMALL, "--result-format", "vllm", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert tuple(d) == VLLM_KEYS
    summary = summarize_vllm_bench(out)
    assert summary["ok"] == 1 and summary["req/s"] > 0 and summary["itl p99"] > summary["tpot mean"] > 0
    printed = runner.invoke(app, ["simulate", *SMALL, "--result-format", "vllm"])
    assert json.loads(printed.stdout) == d  # without --out: the JSON alone on stdout


def test_sglang_keys() -> None:
    res = runner.invoke(app, ["simulate", *SMALL, "--result-format", "sglang"])
    assert res.exit_code == 0 and tuple(json.loads(res.stdout)) == SGLANG_KEYS


def test_figures_are_the_simulations_own(run) -> None:
    sc, result = run
    v, own = result_json(result, sc, "vllm"), result.to_dict()
    done = result.done_ids()
    t = result.table
    assert v["completed"] == own["num_requests"] == 300
    assert v["total_output_tokens"] == int(t.output_len[done].sum())
    assert v["median_ttft_ms"] == pytest.approx(own["ttft_ms"]["p50"])
    assert v["p99_e2el_ms"] == pytest.approx(own["e2e_ms"]["p99"])
    ttft = t.first_token_s[done] - t.arrival_s[done]
    e2e = t.finish_s[done] - t.arrival_s[done]
    tpot = (e2e - ttft) / (t.output_len[done] - 1)
    assert v["mean_tpot_ms"] == pytest.approx(tpot.mean() * 1e3) and v["std_ttft_ms"] == pytest.approx(ttft.std() * 1e3)
    duration = t.finish_s[done].max() - t.arrival_s[done].min()
    assert v["output_throughput"] == pytest.approx(t.output_len[done].sum() / duration)
    s = result_json(result, sc, "sglang")
    assert s["mean_e2e_latency_ms"] == pytest.approx(v["mean_e2el_ms"]) and s["p90_ttft_ms"] <= s["p99_ttft_ms"]


def test_itl_splits_the_decode_time(run) -> None:
    """One gap per chunk per sequence: ITL × chunks is the decode time the requests spent, and with MTP a
    chunk carries 1 + accepted tokens, so ITL / TPOT is the tokens per step."""
    sc, result = run
    v = result_json(result, sc, "vllm")
    steps = np.array(result.recorder.decode_steps)
    chunks = steps[:, 3].sum()
    t, done = result.table, result.done_ids()
    decode_s = (t.finish_s[done] - t.first_token_s[done]).sum()
    assert v["mean_itl_ms"] * 1e-3 * chunks == pytest.approx(decode_s, rel=0.03)
    per_step = (t.output_len[done] - 1).sum() / chunks
    assert v["mean_itl_ms"] / v["mean_tpot_ms"] == pytest.approx(per_step, rel=0.03)
    assert sc.decode is not None and sc.decode.mtp >= 1 and per_step > 1.3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--result-format", "csv"], "--result-format: got 'csv'; expected one of vllm, sglang"),
        (["--out", "x.json"], "--out: writes the --result-format JSON"),
        (["--result-format", "vllm", "--out", "/"], "--out"),
    ],
)
def test_bad_result_flags_are_one_line(args: list[str], needle: str) -> None:
    res = runner.invoke(app, ["simulate", *SMALL, *args])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
