"""A kernel a deployment names (``--kernels``, a scenario's or a validation row's ``kernels``) must be measured on
its chip (or on the chip whose curves it takes): every known kernel on every catalog system either plans past
the check or fails with one line naming the field, the kernel, the chip and the kernels measured there; never
a silent no-op (a GEMM kernel on an NPU, torch_npu's attention on a GPU)."""

import pytest
from typer.testing import CliRunner

from cloudmatrix.catalog.hardware import load_hardware, system_ids
from cloudmatrix.catalog.kernels import curves, kernel_names, kernels_measured_on
from cloudmatrix.catalog.models import load_model
from cloudmatrix.cli.app import app
from cloudmatrix.deploy import Deployment, Phase, plan
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.inputs import InputError


@pytest.mark.parametrize("system", sorted(system_ids()))
def test_every_kernel_on_every_system_is_measured_there_or_refused(system: str) -> None:
    hw = load_hardware(system)
    chip = hw.chip
    measured = {c.kernel for c in curves() if chip.id in c.chips or chip.curves_chip in c.chips}
    assert set(kernels_measured_on((chip.id, chip.curves_chip))) == measured
    model = load_model("deepseek-r1")
    for kernel in kernel_names():
        d = Deployment(phase=Phase.PREFILL, num_chips=1, batch_per_chip=1, input_len=1024, kernels=(kernel,))
        try:
            plan(d, hw, model)
        except InputError as e:
            assert kernel not in measured, (system, kernel, str(e))
            assert str(e).startswith(f"kernels (--kernels): got {kernel!r}, not measured on the {chip.name}")
            assert "\n" not in str(e) and (", ".join(sorted(measured)) or "none") in str(e)
        except CloudMatrixError as e:  # another check (the layout, the memory): the kernel passed its own
            assert kernel in measured, (system, kernel, str(e))
        else:
            assert kernel in measured, (system, kernel)


@pytest.mark.parametrize(
    ("system", "kernel"),
    [("hgx-h100", "npu-fused-infer-attention"), ("atlas-800t-a3", "deepgemm"), ("cloudmatrix384", "marlin-mxfp4")],
)
def test_the_cli_refuses_a_kernel_the_chip_never_ran_with_exit_2(system: str, kernel: str) -> None:
    args = ["estimate", "--system", system, "--chips", "8", "--phase", "prefill", "--kernels", kernel]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"kernels (--kernels): got {kernel!r}, not measured on the" in result.output
    assert "Traceback" not in result.output
