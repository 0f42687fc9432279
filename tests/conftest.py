import pytest

from cloudmatrix.deploy import Deployment, Eplb, Phase


@pytest.fixture
def paper_decode() -> Deployment:
    """The paper's decode point: 160 NPUs, EP320, batch 96/NPU, KV 4,096, MTP 1 at 70 % (P3 Table 3)."""
    return Deployment(
        phase=Phase.DECODE,
        num_chips=160,
        ep=320,
        batch_per_chip=96,
        kv_len=4096,
        input_len=4096,
        output_len=256,
        mtp=1,
        mtp_acceptance=0.7,
        eplb=Eplb.DEFAULT,
    )


@pytest.fixture
def paper_prefill() -> Deployment:
    return Deployment(phase=Phase.PREFILL, num_chips=16, ep=32, tokens_per_chip=16384, input_len=4096, microbatch=True)
