"""DeepSeek-V4's compressed attention priced end to end: the acceptance runs (a 128K decode of V4-Flash on
CloudMatrix384, V4-Pro on GB300 NVL72), and the shape of the cost in the context."""

import json
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cli.app import app
from cloudmatrix.cost.compressed_attention import compressed_attention_ops
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.estimate import estimate

runner = CliRunner()
FLASH = load_model("deepseek-v4-flash")


def _cli(args: list[str]) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_a_128k_decode_of_v4_flash_runs_on_cloudmatrix384() -> None:
    d = _cli(["estimate", "--model", "deepseek-v4-flash", "--phase", "decode", "--kv-len", "131072",
              "--input-len", "131072", "--output-len", "1024"])  # fmt: skip
    assert math.isfinite(d["step_ms"]) and d["step_ms"] > 0
    assert {"compressed_attention", "compressed_attention_indexer", "hyper_connections"} <= set(d["breakdown_us"])
    assert sum(d["breakdown_us"].values()) / 1e3 == pytest.approx(d["step_ms"], rel=0.01)


def test_v4_pro_runs_on_gb300_nvl72_decode_and_prefill() -> None:
    common = ["--system", "gb300-nvl72", "--model", "deepseek-v4-pro", "--chips", "72", "--precision", "fp4",
              "--activation-precision", "fp8", "--kv-precision", "fp8"]  # fmt: skip
    decode = _cli(["estimate", *common, "--phase", "decode", "--batch-per-chip", "32", "--kv-len", "131072",
                   "--input-len", "131072"])  # fmt: skip
    prefill = _cli(["estimate", *common, "--phase", "prefill", "--tokens-per-chip", "16384"])
    assert math.isfinite(decode["step_ms"]) and decode["step_ms"] > 0
    assert math.isfinite(prefill["batch_time_ms"]) and prefill["batch_time_ms"] > 0


def test_a_million_token_context_fits_at_a_small_batch_and_is_refused_with_the_numbers_at_a_large_one() -> None:
    small = Deployment(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=4, input_len=1 << 20,
                       output_len=1024, kv_len=1 << 20, kv_precision="int8")  # fmt: skip
    assert math.isfinite(estimate("cloudmatrix384", FLASH, small).step.step_s)
    large = Deployment(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=256, input_len=1 << 20,
                       output_len=1024, kv_len=1 << 20, kv_precision="bf16")  # fmt: skip
    with pytest.raises(InfeasibleDeploymentError, match="KV"):
        estimate("cloudmatrix384", FLASH, large)


def _core(context: int) -> dict[str, float]:
    d = Deployment(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=8, input_len=context, output_len=1,
                   kv_len=context, mtp=0)  # fmt: skip
    p = plan(d, load_hardware("cloudmatrix384"), FLASH)
    return {op.name: op.flops for op in compressed_attention_ops(p, 1.0)}


def test_csa_attends_to_top_k_and_hca_to_every_entry_while_the_indexer_scores_them_all() -> None:
    """Past 4 x top-k tokens the CSA layers' attended entries stop growing, HCA's grow as context/128 and the
    indexer's scoring grows linearly: doubling a long context less than doubles the core but doubles the
    indexer."""
    c = FLASH.compressed
    assert c is not None
    assert c.attended(4, 1 << 20) == 128 + 512
    assert c.attended(128, 1 << 20) == 128 + (1 << 20) / 128
    assert c.attended(0, 1 << 20) == 128
    short, long = _core(1 << 17), _core(1 << 18)
    assert long["compressed_attention_indexer"] == pytest.approx(2 * short["compressed_attention_indexer"])
    assert short["compressed_attention"] < long["compressed_attention"] < 2 * short["compressed_attention"]


def test_tensor_parallel_attention_splits_the_head_weights_and_adds_an_all_reduce() -> None:
    d = Deployment(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=8, input_len=4096, output_len=1,
                   kv_len=4096, mtp=0)  # fmt: skip
    hw = load_hardware("cloudmatrix384")
    one = {op.name: op for op in compressed_attention_ops(plan(d, hw, FLASH), 1.0)}
    assert "attn_all_reduce" not in one
    split = FLASH.compressed.head_split_params(4096)
    assert one["attn_head_proj"].flops == pytest.approx(2.0 * 4 * split)  # 8 sequences per chip: 4 per die
    two = {op.name: op for op in compressed_attention_ops(plan(replace(d, tp=2), hw, FLASH), 1.0)}
    assert "attn_all_reduce" in two
    # the group's dies share their sequences: split weights keep a die's FLOPs, replicated ones double them
    assert two["attn_head_proj"].flops == pytest.approx(one["attn_head_proj"].flops)
    assert two["attn_shared_proj"].flops == pytest.approx(2 * one["attn_shared_proj"].flops)


@settings(max_examples=15, deadline=None)
@given(context=st.integers(min_value=1, max_value=1 << 20), batch=st.integers(min_value=1, max_value=64))
def test_any_context_prices_finite_and_more_context_never_costs_less(context: int, batch: int) -> None:
    def step(kv: int) -> float:
        d = Deployment(phase=Phase.DECODE, num_chips=32, ep=64, batch_per_chip=batch, input_len=kv, output_len=1,
                       kv_len=kv, mtp=0, kv_precision="int8")  # fmt: skip
        try:
            return estimate("cloudmatrix384", FLASH, d).step.step_s
        except InfeasibleDeploymentError:
            return math.inf

    here, further = step(context), step(context + 4096)
    assert here > 0 and not math.isnan(here)
    assert further >= here or math.isinf(further)
