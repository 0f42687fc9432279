"""Shared experts on dies of their own: a deployment's stated ``shared_dies`` is used as given (the paper's
EP320 runs 256 routed + 32 redundant + 32 shared dies); otherwise, with more EP ranks than routed experts,
they get ranks x shared / (top-k + shared) dies, so a shared die carries about a routed die's rows and the
shared dies never set the step alone (at EP288 the old even split gave 16 dies with twice the rows)."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.presets import presets
from cloudmatrix.catalog.reference import load_reference
from cloudmatrix.deploy import Deployment, Phase, expert_layout, shared_expert_dies, stated_shared_dies
from cloudmatrix.deployment import paper_deployments
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.estimate import estimate

R1 = load_model("deepseek-r1")
QWEN = load_model("qwen3-235b-a22b")  # no shared experts


@settings(max_examples=40, deadline=None)
@given(ep=st.integers(257, 1024))
def test_rule_balances_shared_and_routed_rows(ep: int) -> None:
    moe = R1.moe
    assert moe is not None
    lay = expert_layout(R1, ep, None)
    assert lay.shared_dies == shared_expert_dies(R1, ep) and lay.routed_dies + lay.shared_dies == ep
    tokens = 1.0
    routed_rows = tokens * moe.top_k / lay.routed_slots * lay.routed_slots_per_die
    shared_rows = tokens * moe.num_shared / lay.shared_dies
    # within one die's rounding of the balanced split
    assert shared_rows <= routed_rows * (1 + 1.5 / lay.shared_dies)
    assert lay.routed_slots == moe.num_routed + lay.redundant


@pytest.mark.parametrize("ep", [8, 32, 64, 144, 256])
def test_shared_expert_stays_local_without_spare_ranks(ep: int) -> None:
    assert expert_layout(R1, ep, None).shared_dies == 0


def test_stated_shared_dies_are_used() -> None:
    paper = expert_layout(R1, 320, None, 32)
    assert (paper.routed_dies, paper.redundant, paper.shared_dies, paper.routed_slots_per_die) == (288, 32, 32, 1)
    assert expert_layout(R1, 320, None).shared_dies == 36  # the rule: 320 x 1 / 9
    assert expert_layout(R1, 288, None).shared_dies == 32
    small = expert_layout(R1, 32, None, 4)  # stated below the routed count: 28 routed dies of 10 slots
    assert (small.routed_dies, small.routed_slots_per_die, small.redundant) == (28, 10, 24)


@pytest.mark.parametrize(
    ("model", "ep", "shared", "message"),
    [
        (QWEN, 16, 2, "shared_dies 2: the model has no shared experts to place"),
        (R1, 320, 320, "shared_dies 320 leaves no die of EP320 for the 256 routed experts"),
        (R1, 64, 80, "shared_dies 80 leaves no die of EP64"),
    ],
)
def test_impossible_shared_dies_are_refused(model, ep: int, shared: int, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InfeasibleDeploymentError, match=message):
        expert_layout(model, ep, None, shared)


def test_a_dense_model_refuses_shared_dies() -> None:
    d = Deployment(phase=Phase.DECODE, num_chips=8, batch_per_chip=8, shared_dies=2)
    with pytest.raises(InfeasibleDeploymentError, match="is dense: it has no shared experts for shared_dies 2"):
        estimate("hgx-h100", "llama-3.1-405b", d)


def test_paper_layout_stays_as_published() -> None:
    ref = load_reference("cloudmatrix-infer")
    for row in ref.rows:
        if row.setup.get("ep") == 320:
            assert row.setup.get("shared_dies") == 32, row.id
    assert paper_deployments()[Phase.DECODE].shared_dies == 32
    assert presets()["cloudmatrix384"]["decode"]["shared_dies"] == 32
    # a preset's stated layout is its own model's: another model placed there takes the rule
    assert stated_shared_dies(R1, 320, 32) == 32
    assert stated_shared_dies(QWEN, 320, 32) is None and stated_shared_dies(R1, 256, 32) is None


def test_ep288_is_not_bound_by_too_few_shared_dies() -> None:
    d = Deployment(phase=Phase.DECODE, num_chips=144, ep=288, batch_per_chip=96, mtp=1, mtp_acceptance=0.7)
    rule = estimate("cloudmatrix384", R1, d)
    few = estimate("cloudmatrix384", R1, dataclasses.replace(d, shared_dies=16))
    assert rule.plan.layout is not None and rule.plan.layout.shared_dies == 32
    assert rule.step.step_s < few.step.step_s * 0.9
