"""A decode step reads only the experts its batch routes to, and a single EP rank sends nothing."""

import pytest

from cloudmatrix.cost.moe import active_fraction
from cloudmatrix.deploy import Deployment, Phase
from cloudmatrix.estimate import estimate


def test_active_fraction_closed_form() -> None:
    # gpt-oss-120b at batch 4: 1 - (1 - 4/128)^4 of 128 experts, i.e. at most 16 (issue 12)
    assert active_fraction(128, 4, 4) * 128 == pytest.approx(128 * (1 - (124 / 128) ** 4))
    assert active_fraction(128, 4, 4) * 128 < 16
    assert active_fraction(256, 8, 0) == 0.0
    assert active_fraction(256, 8, 30720) == pytest.approx(1.0)  # the paper's EP320 decode step: all of them


def _gpt_oss(batch: float, chips: int = 1) -> Deployment:
    return Deployment(
        phase=Phase.DECODE,
        num_chips=chips,
        batch_per_chip=batch,
        input_len=1024,
        output_len=1024,
        precision="fp4",
        kv_precision="fp8",
        microbatch=False,
    )


def test_small_batch_reads_few_experts() -> None:
    small = estimate("hgx-b200", "gpt-oss-120b", _gpt_oss(4))
    large = estimate("hgx-b200", "gpt-oss-120b", _gpt_oss(256))
    # the expert weights dominate at batch 4 no longer: growing the batch 64x costs more than 1.5x
    assert large.step.step_s / small.step.step_s > 1.5
    assert small.step.breakdown_us["experts"] < 0.5 * large.step.breakdown_us["experts"]


def test_one_rank_sends_nothing() -> None:
    est = estimate("hgx-b200", "gpt-oss-120b", _gpt_oss(8))
    assert "dispatch" not in est.step.breakdown_us and "combine" not in est.step.breakdown_us
    two = estimate("hgx-b200", "gpt-oss-120b", _gpt_oss(8, chips=2))
    assert two.step.breakdown_us["dispatch"] > 0
