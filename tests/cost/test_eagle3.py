"""EAGLE-3 draft heads: the step is the (1 + k)-token verify pass plus k passes of the head's one layer and
draft LM head plus one fc; the acceptance changes tokens per step, never the step (property test); the
head's weights are in memory; models without MTP layers and MLA targets run; the CLI reports both the step
and tokens per second."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudmatrix.catalog.eagle import DRAFT_VOCAB, eagle3_head
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cli.app import app
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate

runner = CliRunner()


def _est(k: int, speculation: str, acceptance: float = 0.7, model: str = "qwen3-235b-a22b", **kw):
    d = Deployment(phase=Phase.DECODE, num_chips=8, tp=8, ep=8, batch_per_chip=8, precision="fp8",
                   mtp=k, mtp_acceptance=acceptance, speculation=speculation, **kw)  # fmt: skip
    return estimate("hgx-b200", model, d)


def test_the_step_is_the_verify_pass_plus_the_draft_passes() -> None:
    eagle, ngram = _est(3, "eagle3"), _est(3, "ngram")  # n-gram drafting: the same verify pass, no draft
    drafted = {k: v for k, v in eagle.step.breakdown_us.items() if k.startswith("eagle3.")}
    verify = {k: v for k, v in eagle.step.breakdown_us.items() if not k.startswith("eagle3.")}
    assert verify == pytest.approx(ngram.step.breakdown_us)
    assert eagle.step.step_s * 1e6 == pytest.approx(ngram.step.step_s * 1e6 + sum(drafted.values()))
    one, two = _est(1, "eagle3").step.breakdown_us, _est(2, "eagle3").step.breakdown_us
    for name in ("eagle3.lm_head", "eagle3.dense_ffn", "eagle3.embed_qkv"):  # once per draft pass
        assert two[name] == pytest.approx(2 * one[name])
    assert "eagle3.fc" in one and eagle.step.roofline_step_s <= eagle.step.step_s


@settings(max_examples=20, deadline=None)
@given(st.floats(0, 1))
def test_acceptance_changes_tokens_per_step_never_the_step(acceptance: float) -> None:
    base, e = _est(2, "eagle3", 0.0), _est(2, "eagle3", acceptance)
    assert e.step.step_s == base.step.step_s
    assert e.tokens_per_step_per_chip == pytest.approx(8 * (1 + acceptance + acceptance**2))


def test_the_head_is_in_memory_and_shaped_from_the_target() -> None:
    q = load_model("qwen3-235b-a22b")
    head = eagle3_head(q)
    assert head.draft.num_layers == 1 and head.draft.vocab == DRAFT_VOCAB
    assert head.draft.attention.num_heads == q.attention.num_heads and head.fc_params == 3 * q.hidden**2
    with_head, without = _est(2, "eagle3").memory, _est(2, "ngram").memory
    assert with_head.weights_bytes - without.weights_bytes == pytest.approx(head.params() / 8 * 2)  # BF16 over TP8


@pytest.mark.parametrize(
    ("model", "kv_precision"), [("qwen3-235b-a22b", "bf16"), ("gpt-oss-120b", "fp8"), ("deepseek-r1", "bf16")]
)
def test_the_heads_own_kv_cache_is_in_memory(model: str, kv_precision: str) -> None:
    """One layer's keys and values per token at the KV format, split by KV head over TP8 (at most as many ways
    as it has KV heads): Qwen3-235B's head has the target's 4 KV heads of 128, gpt-oss-120b's 8 of 64, an MLA
    target's head 8 of 128 (assumed). The n-gram draft keeps none; the per-chip batch cap shrinks."""
    head = eagle3_head(load_model(model)).draft
    a = head.attention
    per_token = 2 * a.num_kv_heads * a.qk_head_dim * (1 if kv_precision == "fp8" else 2)
    eagle = _est(2, "eagle3", model=model, kv_precision=kv_precision, attention_tp=8)
    ngram = _est(2, "ngram", model=model, kv_precision=kv_precision, attention_tp=8)
    d = eagle.plan.deployment
    length = d.input_len + d.output_len
    added = eagle.plan.seqs_per_die * per_token * length / min(8, a.num_kv_heads)  # a TP group's sequences
    assert eagle.memory.kv_bytes - ngram.memory.kv_bytes == pytest.approx(added)
    assert eagle.memory.max_batch_per_chip < ngram.memory.max_batch_per_chip


def test_models_without_mtp_layers_and_mla_targets_run() -> None:
    assert load_model("qwen3-235b-a22b").mtp_layers == 0
    assert _est(3, "eagle3").tpot_s < _est(0, "mtp").tpot_s  # at 70 % acceptance it pays at batch 8
    r1 = _est(1, "eagle3", model="deepseek-r1", attention_tp=8)
    assert r1.step.step_s > 0 and eagle3_head(load_model("deepseek-r1")).draft.attention.num_kv_heads == 8


def test_cli_reports_step_and_tokens_per_second() -> None:
    args = ["estimate", "--system", "hgx-b200", "--model", "qwen3-235b-a22b", "--phase", "decode", "--chips", "8",
            "--tp", "8", "--ep", "8", "--batch-per-chip", "8", "--precision", "fp8", "--mtp", "3",
            "--mtp-acceptance", "0.7", "--speculation", "eagle3"]  # fmt: skip
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["step_ms"] > d["tpot_ms"] > 0 and d["throughput_per_chip_tok_s"] > 0
    assert any(k.startswith("eagle3.") for k in d["breakdown_us"])
    bad = runner.invoke(app, [*args[:-1], "medusa"])
    assert bad.exit_code == 2 and "eagle3" in bad.output


def test_a_token_tree_verifies_its_tokens_and_drafts_its_candidates() -> None:
    """Top-k 3 over 5 draft passes verifying 6 tokens: the verify pass is n-gram's 6-token one (mtp 5), the
    first draft pass is the chain's, each later pass runs over 3 candidates per sequence (never cheaper)."""
    tree = _est(5, "eagle3", draft_topk=3, verify_tokens=6).step.breakdown_us
    chain = _est(5, "eagle3").step.breakdown_us
    verify = {k: v for k, v in tree.items() if not k.startswith("eagle3.")}
    assert verify == pytest.approx(_est(5, "ngram").step.breakdown_us)
    assert tree["eagle3.fc"] == pytest.approx(chain["eagle3.fc"])  # once per step over the verified tokens
    for name in ("eagle3.lm_head", "eagle3.embed_qkv", "eagle3.attention_core"):
        assert tree[name] >= chain[name]
    assert sum(v for k, v in tree.items() if k.startswith("eagle3.")) > sum(
        v for k, v in chain.items() if k.startswith("eagle3.")
    )
    bigger = _est(5, "eagle3", draft_topk=3, verify_tokens=12).step.breakdown_us  # a larger tree to verify
    assert sum(bigger.values()) > sum(tree.values())


def test_a_chain_is_a_tree_of_top_1() -> None:
    chain = _est(4, "eagle3")
    same = _est(4, "eagle3", draft_topk=1, verify_tokens=5)
    assert same.step.step_s == chain.step.step_s and same.step.breakdown_us == chain.step.breakdown_us


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 8),
    st.integers(-2, 20),
    st.one_of(st.none(), st.integers(-5, 3000)),
    st.sampled_from(["mtp", "ngram", "eagle3"]),
)
def test_a_draft_tree_is_priced_or_refused_in_one_line(mtp: int, topk: int, verify: int | None, spec: str) -> None:
    """Any tree shape: priced finite when EAGLE-3 drafts it within SGLang's bound, else one line naming the
    field and what it expects (the CLI's exit 2)."""
    args = ["estimate", "--system", "hgx-b200", "--model", "qwen3-235b-a22b", "--phase", "decode", "--chips", "8",
            "--tp", "8", "--ep", "8", "--batch-per-chip", "4", "--precision", "fp8", "--mtp", str(mtp),
            "--mtp-acceptance", "0.6", "--speculation", spec, "--draft-topk", str(topk), "--json"]  # fmt: skip
    if verify is not None:
        args += ["--verify-tokens", str(verify)]
    res = runner.invoke(app, args)
    if _tree_fits(mtp, topk, verify, spec):
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["step_ms"] > 0
    else:
        assert res.exit_code == 2, res.output
        assert res.output.count("\n") == 1 and res.output.startswith("error: ")
        assert any(f in res.output for f in ("draft_topk", "verify_tokens", "MTP layers"))


def _tree_fits(mtp: int, topk: int, verify: int | None, spec: str) -> bool:
    """SGLang's rule, stated independently: a top-1 chain verifies 1 + k tokens; a tree of top-k > 1 needs
    a draft pass and verifies 2 to 1 + topk + (k - 1) topk^2; trees are EAGLE's; Qwen3 has no MTP layers."""
    if not 1 <= topk <= 16 or (verify is not None and not 1 <= verify <= 2049):
        return False
    if (topk > 1 or verify is not None) and spec != "eagle3":
        return False
    if spec == "mtp" and mtp > 0:
        return False
    n = 1 + mtp if verify is None else verify
    if topk == 1:
        return n == 1 + mtp
    return mtp >= 1 and 2 <= n <= 1 + topk + (mtp - 1) * topk**2
