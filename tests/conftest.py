import dataclasses
import os
import tempfile

import pytest

# The parsed-catalog cache of the test session: a fresh folder, never the user's own cache.
os.environ.setdefault("CLOUDMATRIX_CACHE_DIR", tempfile.mkdtemp(prefix="cloudmatrix-test-cache-"))

from cloudmatrix.deploy import Deployment, Phase  # noqa: E402
from cloudmatrix.deployment import paper_deployments  # noqa: E402


@pytest.fixture
def paper_decode() -> Deployment:
    """The paper's decode point: 160 NPUs, EP320, batch 96/NPU, KV 4,096, MTP 1 at 70 % (P3 Table 3),
    with the microbatch choice left to the model."""
    return dataclasses.replace(paper_deployments()[Phase.DECODE], microbatch=None)


@pytest.fixture
def paper_prefill() -> Deployment:
    return Deployment(phase=Phase.PREFILL, num_chips=16, ep=32, tokens_per_chip=16384, input_len=4096, microbatch=True)
