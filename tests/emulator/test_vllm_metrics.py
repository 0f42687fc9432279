"""/metrics in vLLM's names: every series a stock vLLM Grafana dashboard queries, and every one the shipped
docs/grafana-serve.json queries, is exported with a ``model_name`` label (scraped with the API key); vLLM's
types and buckets; the counts agree with the requests sent."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudmatrix.emulator.vllm_metrics import TOKEN_GAP_BUCKETS_S, TTFT_BUCKETS_S, one_two_five_buckets

from .conftest import API_KEY, Server, start_server

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-serve.json"
SERVED = "deepseek-ai/DeepSeek-R1"
# The series vLLM's stock dashboard (examples/online_serving/prometheus_grafana/grafana.json) queries.
STOCK_DASHBOARD_SERIES = (
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_per_output_token_seconds_bucket",
    "vllm:time_per_output_token_seconds_sum",
    "vllm:time_per_output_token_seconds_count",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:gpu_cache_usage_perc",
    "vllm:request_prompt_tokens_bucket",
    "vllm:request_generation_tokens_bucket",
    "vllm:request_success_total",
    "vllm:request_queue_time_seconds_sum",
    "vllm:request_prefill_time_seconds_sum",
    "vllm:request_decode_time_seconds_sum",
    "vllm:request_max_num_generation_tokens_sum",
)
ALSO_ASKED = (
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
)


@pytest.fixture(scope="module")
def scraped() -> Iterator[tuple[Server, dict[str, list], list[dict]]]:
    server = start_server("--api-key", API_KEY, "--speed", "20", "--served-model-name", SERVED)
    try:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        timelines = []
        for max_tokens in (3, 5, 8):
            body = {"model": SERVED, "prompt": "abcd" * 10, "max_tokens": max_tokens, "ignore_eos": True}
            r = httpx.post(f"{server.url}/v1/completions", json=body, headers=auth, timeout=30)
            assert r.status_code == 200
            timelines.append(httpx.get(f"{server.url}/v1/cloudmatrix/requests/{r.json()['id']}", headers=auth).json())
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401  # behind the key
        text = httpx.get(f"{server.url}/metrics", headers=auth, timeout=10).text
        samples: dict[str, list] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        yield server, samples, timelines
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)


def test_every_series_of_the_stock_vllm_dashboard_is_exported(scraped) -> None:
    _, samples, _ = scraped
    missing = [name for name in STOCK_DASHBOARD_SERIES + ALSO_ASKED if name not in samples]
    assert not missing
    for name in STOCK_DASHBOARD_SERIES + ALSO_ASKED:
        assert all(s.labels["model_name"] == SERVED and s.labels["engine"] == "0" for s in samples[name]), name


def test_every_series_the_shipped_dashboard_queries_is_exported(scraped) -> None:
    _, samples, _ = scraped
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\b(?:vllm:|cloudmatrix_)[a-z0-9_:]+", e)}
    assert len(queried) >= 15 and not sorted(queried - set(samples))
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    assert re.search(r"label_values\((vllm:[a-z_]+), model_name\)", variable).group(1) in samples


def test_types_buckets_and_counts_are_vllms(scraped) -> None:
    _, samples, timelines = scraped

    def bounds(name: str) -> list[float]:
        return [float(s.labels["le"]) for s in samples[f"{name}_bucket"] if s.labels["le"] != "+Inf"]

    assert bounds("vllm:time_to_first_token_seconds") == list(TTFT_BUCKETS_S)
    assert bounds("vllm:inter_token_latency_seconds") == list(TOKEN_GAP_BUCKETS_S)
    assert bounds("vllm:e2e_request_latency_seconds")[:3] == [0.3, 0.5, 0.8]
    assert one_two_five_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    (generated,) = samples["vllm:generation_tokens_total"]
    assert generated.value == 3 + 5 + 8
    assert samples["vllm:prompt_tokens_total"][0].value == 3 * 10
    by_reason = {s.labels["finished_reason"]: s.value for s in samples["vllm:request_success_total"]}
    assert by_reason == {"stop": 0, "length": 3, "abort": 0}
    assert samples["vllm:e2e_request_latency_seconds_count"][0].value == 3
    # one gap per chunk after the first (MTP: 1 or 2 tokens a chunk), together the requests' decode time
    chunks = samples["vllm:inter_token_latency_seconds_count"][0].value
    assert (2 + 4 + 7) / 2 <= chunks <= 2 + 4 + 7
    decode_s = sum((t["finish_s"] - t["first_token_s"]) / t["speed"] for t in timelines)
    assert samples["vllm:inter_token_latency_seconds_sum"][0].value == pytest.approx(decode_s, rel=1e-6)
    assert samples["vllm:num_requests_running"][0].value == 0 and samples["vllm:kv_cache_usage_perc"][0].value == 0
