"""The server launch settings an InferenceMAX row carries (data/validation/inferencemax.yaml, from the
benchmark's scripts): SGLang's memory fraction and scheduler receive interval, and the GEMM kernels a script's
environment forced, on every row they apply to and on no other."""

import csv
import io
from pathlib import Path

from cloudmatrix.catalog.corpus import load_corpora
from cloudmatrix.catalog.inferencemax import mapping, read_inferencemax
from cloudmatrix.catalog.kernels import kernel_names
from cloudmatrix.catalog.validation import VALIDATION_DIR


def _imx_rows():
    return [r for r in load_corpora(["inferencemax-public", "inferencemax-more"]) if r.aggregated is not None]


def test_sglang_b200_rows_poll_every_10_steps_below_16_clients_and_every_30_from_16() -> None:
    rows = _imx_rows()
    b200 = [r for r in rows if r.stack == "sglang" and r.system == "hgx-b200"]
    assert b200
    for r in b200:
        conc = r.workload.concurrency or 1
        assert r.aggregated is not None and r.aggregated.recv_interval == (30 if conc >= 16 else 10), r.id
    others = [r for r in rows if not (r.stack == "sglang" and r.system == "hgx-b200")]
    assert all(r.aggregated is not None and r.aggregated.recv_interval is None for r in others)


def test_sglang_rows_carry_their_scripts_memory_fraction_and_no_other_stack_does() -> None:
    expected = {("hgx-b200", "fp4"): 0.85, ("hgx-b200", "fp8"): 0.82, ("hgx-h200", "fp8"): 0.82}
    for r in _imx_rows():
        assert r.aggregated is not None
        if r.stack != "sglang":
            assert r.aggregated.memory_fraction is None, r.id
        elif r.system in ("mi300x", "mi325x", "mi355x"):
            assert r.aggregated.memory_fraction == 0.8, r.id
        else:
            precision = "fp4" if r.weights == "nvfp4" else "fp8"
            assert r.aggregated.memory_fraction == expected[(r.system, precision)], r.id


def test_every_launch_rule_names_its_source() -> None:
    for table in ("memory_fraction", "recv_interval", "kernels", "attention_dp_balance"):
        assert mapping()[table]
        assert all(rule["source"].startswith("SA-IMX") for rule in mapping()[table])


def test_vllm_gpt_oss_hopper_rows_of_the_marlin_scripts_name_marlin_and_no_other_row_names_a_kernel() -> None:
    """The gpt-oss H100/H200 scripts export VLLM_MXFP4_USE_MARLIN=1 from their vLLM v0.13.0 image on; the
    DeepSeek H200 SGLang script runs TP8 experts without an all-to-all backend (Triton fused_moe)."""
    rows = load_corpora(["inferencemax-public", "inferencemax-more"])
    marlin = [
        r
        for r in rows
        if r.stack == "vllm"
        and r.model == "gpt-oss-120b"
        and r.system in ("hgx-h100", "hgx-h200")
        and "v0.13.0" in r.source
    ]
    assert len(marlin) == 94
    assert all(r.kernels == ["marlin-mxfp4"] for r in marlin)
    triton = [r for r in rows if r.stack == "sglang" and r.system == "hgx-h200" and r.model == "deepseek-r1"]
    assert len(triton) == 15 and all(r.kernels == ["triton-fused-moe"] for r in triton)  # SGLang TP8 MoE
    assert all(not r.kernels for r in rows if r not in marlin and r not in triton)


def test_a_kernel_rule_applies_only_to_the_images_it_names(tmp_path: Path) -> None:
    """The same deployment from another image (the environment variable is the script's, not the engine's
    default) runs the stack's own kernels."""
    path = VALIDATION_DIR / "inferencemax-more.csv"
    header, *lines = list(csv.reader(io.StringIO(path.read_text())))
    cells = next(c for c in lines if c[1] == "h200" and c[2] == "vllm")
    for image, expected in (("vllm/vllm-openai:v0.13.0", ["marlin-mxfp4"]), ("vllm/vllm-openai:v0.11.2", [])):
        cells[header.index("image")] = image
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([header, cells])
        (tmp_path / "one.csv").write_text(out.getvalue())
        (row,) = read_inferencemax(tmp_path / "one.csv")
        assert row.kernels == expected, image


def test_every_kernel_rule_names_kernels_with_a_measured_curve() -> None:
    for rule in mapping()["kernels"]:
        assert rule["kernels"] and all(k in kernel_names() for k in rule["kernels"]), rule


def test_tensorrt_llm_dp_attention_rows_hold_prompts_for_balance_and_no_other_row_does() -> None:
    """The gpt-oss TensorRT-LLM scripts launch DP attention with enable_balance on at TensorRT-LLM's default
    counts (50-iteration timeout, 10 batching iterations); tensor-parallel attention runs have no balance."""
    rows = _imx_rows()
    dpa = [r for r in rows if r.stack == "trtllm" and r.aggregated is not None and r.aggregated.dp_attention]
    assert len(dpa) >= 12
    for r in dpa:
        b = r.aggregated.attention_dp_balance  # type: ignore[union-attr]
        assert b is not None and (b.timeout_iters, b.batching_wait_iters) == (50, 10), r.id
    others = [r for r in rows if r not in dpa]
    assert all(r.aggregated is not None and r.aggregated.attention_dp_balance is None for r in others)


def test_vllm_rows_carry_an_fp8_kv_cache_only_where_their_script_set_one() -> None:
    """The vLLM B200 gpt-oss scripts of the v0.13.0 runs write kv-cache-dtype: fp8 into their config.yaml; every
    other vLLM row (the H100/H200 gpt-oss scripts, DeepSeek) keeps the BF16 default."""
    vllm = [r for r in _imx_rows() if r.stack == "vllm"]
    fp8 = {r.id for r in vllm if r.kv == "fp8"}
    expected = {r.id for r in vllm if r.system == "hgx-b200" and r.model == "gpt-oss-120b" and "v0.13.0" in r.source}
    assert len(expected) == 38 and fp8 == expected
    assert all(r.kv == "bf16" for r in vllm if r.id not in expected)


def test_a_kv_rule_keyed_on_an_image_leaves_other_images_at_the_default() -> None:
    """A row from another vLLM image on B200 is not given the v0.13.0 scripts' FP8 cache."""
    from cloudmatrix.catalog.inferencemax import _kv

    assert _kv("vllm", "fp4", "hgx-b200", "gpt-oss-120b", "vllm/vllm-openai:v0.13.0") == "fp8"
    assert _kv("vllm", "fp4", "hgx-b200", "gpt-oss-120b", "vllm/vllm-openai:v0.10.2") == "bf16"
    assert _kv("vllm", "fp4", "hgx-h200", "gpt-oss-120b", "vllm/vllm-openai:v0.13.0") == "bf16"
    assert _kv("sglang", "fp4", "hgx-b200", "deepseek-r1", "") == "fp8"
