"""The shapes at which kernels were measured (``data/kernels/shapes.yaml`` for the attention kernels; the GEMM
curves' own points for GEMMs), so that an op priced at a shape outside them can say it extrapolates.

A GEMM curve is measured up to its last M (or the largest M its growth tables reach) and, beyond its last
point, over the experts per die its ``levels`` cover. Below its first M a GEMM is weight-bound and the
roofline's memory term prices it (catalog/kernels.py), so only shapes above are outside."""

from __future__ import annotations

from functools import cache

from cloudmatrix.catalog.kernels import KERNELS_DIR, KernelCurve
from cloudmatrix.catalog.record import Record, field
from cloudmatrix.catalog.sourced import parse_file

SHAPES_PATH = KERNELS_DIR / "shapes.yaml"


class KernelShape(Record):
    """One kernel's measured shape: for each named dimension the [lowest, highest] value measured."""

    id: str
    op: str  # the op it prices (cost/ops.py names)
    attention: str | None = None  # the attention kind it applies to (mla), or any
    chips: list[str] = field(min_length=1)
    dims: dict[str, tuple[float, float]]
    source: str = field(min_length=1)
    assumed: bool = False


class ShapeCatalog(Record):
    kernels: list[KernelShape]


@cache
def kernel_shapes() -> tuple[KernelShape, ...]:
    return tuple(parse_file(ShapeCatalog, SHAPES_PATH).kernels)


def measured_shape(chip: str, op: str, attention: str | None) -> KernelShape | None:
    """The measured shape of the kernel that prices ``op`` on ``chip`` (None: nothing measured there)."""
    for k in kernel_shapes():
        if k.op == op and chip in k.chips and k.attention in (None, attention):
            return k
    return None


def curve_rows_measured(curve: KernelCurve) -> float:
    """The largest M a curve was measured at: its last point, or the largest its growth tables reach."""
    return max(curve.points[-1][0], curve.growth[-1][0] if curve.growth else 0.0)


def curve_experts_measured(curve: KernelCurve) -> tuple[float, float] | None:
    """The experts per die its level beyond the last point was measured over (None: no levels)."""
    if not curve.levels:
        return None
    return curve.levels[0][0], curve.levels[-1][0]
