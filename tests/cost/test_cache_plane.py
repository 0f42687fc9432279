"""A prompt cache read over the storage (VPC) plane on a system that has none is refused by name (it was an
internal error, exit 3), on every shipped system; systems with a storage plane price it."""

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.cli.app import app
from cloudmatrix.deployment import Deployment, Phase
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import estimate


@pytest.mark.parametrize("system", sorted(system_ids()))
def test_vpc_cache_needs_a_storage_plane(system: str) -> None:
    has_storage = load_hardware(system).system.planes.storage is not None
    d = Deployment(phase=Phase.PREFILL, num_chips=16, cached_fraction=0.5, cache_plane="vpc")
    try:
        estimate(system, "deepseek-r1", d)
        refusal = ""
    except CloudMatrixError as e:  # anything else (ValueError, ...) is the bug this guards
        refusal = str(e)
    assert ("no storage (VPC) plane" in refusal) == (not has_storage), refusal


def test_cli_refuses_vpc_cache_without_storage_plane_with_exit_2() -> None:
    result = CliRunner().invoke(
        app,
        [
            "estimate",
            "--system",
            "atlas-800i-a2",
            "--phase",
            "prefill",
            "--cached-fraction",
            "0.5",
            "--cache-plane",
            "vpc",
        ],
    )
    assert result.exit_code == 2
    assert "atlas-800i-a2 has no storage (VPC) plane" in result.output
