"""n-gram (prompt-lookup) speculation for models without MTP layers: no device pass drafts, the step is the
(1 + k)-token verify pass, the acceptance is an input, and both the step time and the tokens per second are
reported."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from cloudmatrix.deploy import Deployment, Phase, mtp_tokens_per_step
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.estimate import estimate

runner = CliRunner()


def _qwen(draft: int, acceptance: float, speculation: str = "ngram") -> Deployment:
    return Deployment(phase=Phase.DECODE, num_chips=8, ep=8, batch_per_chip=32, kv_len=4096, precision="fp8",
                      mtp=draft, mtp_acceptance=acceptance, speculation=speculation)  # fmt: skip


def test_ngram_drafts_cost_no_device_pass_and_verify_k_plus_one_tokens() -> None:
    plain, ngram = (
        estimate("hgx-b200", "qwen3-235b-a22b", _qwen(0, 0.0)),
        estimate("hgx-b200", "qwen3-235b-a22b", _qwen(3, 0.6)),
    )
    assert not any(k.startswith("mtp.") for k in ngram.step.breakdown_us)
    assert ngram.step.step_s > plain.step.step_s  # four tokens per sequence verified, not one
    assert ngram.tokens_per_step_per_chip == pytest.approx(32 * mtp_tokens_per_step(3, 0.6))
    assert ngram.memory.weights_bytes == pytest.approx(plain.memory.weights_bytes)  # no draft layer loaded


@settings(max_examples=10, deadline=None)
@given(acceptance=st.floats(min_value=0.0, max_value=1.0))
def test_the_acceptance_changes_tokens_per_step_never_the_step(acceptance: float) -> None:
    low = estimate("hgx-b200", "qwen3-235b-a22b", _qwen(2, 0.0))
    here = estimate("hgx-b200", "qwen3-235b-a22b", _qwen(2, acceptance))
    assert here.step.step_s == pytest.approx(low.step.step_s)
    assert here.tokens_per_step_per_chip >= low.tokens_per_step_per_chip


def test_mtp_drafting_still_needs_mtp_layers_and_unknown_methods_are_refused() -> None:
    with pytest.raises(InfeasibleDeploymentError, match="has no MTP layers"):
        estimate("hgx-b200", "qwen3-235b-a22b", _qwen(1, 0.7, "mtp"))
    with pytest.raises(InfeasibleDeploymentError, match="speculation 'medusa' is not one of: mtp, ngram, eagle3"):
        estimate("hgx-b200", "qwen3-235b-a22b", _qwen(1, 0.7, "medusa"))


def test_the_cli_reports_the_step_and_the_tokens_per_second() -> None:
    res = runner.invoke(app, ["estimate", "--system", "hgx-b200", "--model", "qwen3-235b-a22b", "--chips", "8",
                              "--precision", "fp8", "--batch-per-chip", "32", "--mtp", "3", "--mtp-acceptance",
                              "0.6", "--speculation", "ngram", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["speculation"] == "ngram" and d["step_ms"] > d["tpot_ms"] > 0
    assert d["throughput_per_chip_tok_s"] == pytest.approx(d["tokens_per_step"] / d["step_ms"] * 1e3, rel=1e-6)
    bad = runner.invoke(app, ["estimate", "--speculation", "medusa"])
    assert bad.exit_code == 2 and "speculation 'medusa'" in bad.output
