"""Every serving stack's chip family entries (stacks.yaml) state what the pricing can use: the kernels each names
are measured curves for that op on a chip of the family (a misspelt or foreign name would price nothing, the
chip's flat value, without a word), and every host time, cost per op and kernel count is a finite number that
is not negative, with a source; a ``like`` entry's own numbers too."""

import math

import pytest

from cloudmatrix.catalog.hardware import chip_ids, load_chip
from cloudmatrix.catalog.kernels import curves
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import DEFAULT_FAMILY, CostsLike, StackCosts, load_stack, stack_ids

_OPS = ("dense", "grouped", "attention", "grouped_gathered")  # the last: a MoE without a dispatch
_NUMBERS = ("step_overhead_us", "request_overhead_ms", "handoff_overhead_ms", "op_launch_us", "step_op_us")


def _measured(family: str, op: str) -> set[str]:
    """Kernels with a curve for ``op`` on a chip of ``family`` (any family for a ``default`` entry)."""
    chips = {c for c in chip_ids() if family == DEFAULT_FAMILY or load_chip(c).family == family}
    return {c.kernel for c in curves() if c.op == op and chips & set(c.chips)}


@pytest.mark.parametrize("stack", stack_ids())
def test_every_family_entry_names_measured_kernels_and_sound_numbers(stack: str) -> None:
    for family, entry in load_stack(stack).families.items():
        where = f"{stack}/{family}"
        assert isinstance(entry, StackCosts | CostsLike), where
        for op, names in entry.kernels.items():
            assert op in _OPS, (where, op)
            curve_op = "grouped" if op == "grouped_gathered" else op
            assert names and set(names) <= _measured(family, curve_op), (where, op, names)
            assert entry.kernels_source, where
        fields = _NUMBERS if isinstance(entry, StackCosts) else ("op_launch_us",)
        for name in (*fields, "tasks_per_op"):
            number = getattr(entry, name, None)
            if number is None:
                continue
            assert isinstance(number, Sourced) and number.source, (where, name)
            assert math.isfinite(number.value) and number.value >= 0, (where, name, number.value)
        if entry.tasks_per_op is not None:
            assert entry.tasks_per_op.value > 0, where  # a count beyond the launch: 0 states nothing


def test_the_kernel_check_would_catch_a_misspelt_name() -> None:
    """The test above is not vacuous: a name the curves do not hold, or an op they do not price, is caught."""
    assert "npu-fused-infer-attention" in _measured("ascend", "attention")
    assert "npu-fused-attention" not in _measured("ascend", "attention")
    assert "deepgemm" not in _measured("ascend", "dense") and "deepgemm" in _measured("hopper", "dense")
