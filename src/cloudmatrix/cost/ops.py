"""Operator descriptors and their pricing on one die (design.md §3 rule 1):
``time = max(flops / (eff_c · peak · core_share), bytes / (eff_m · bw)) + launches · launch``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloudmatrix.catalog.hardware import ChipSpec


class OpClass(StrEnum):
    GEMM = "gemm"
    ATTENTION = "attention"
    VECTOR = "vector"
    COMM = "comm"


class Stream(StrEnum):
    """Which decode microbatch stream an op runs on (P3 §4.2.3)."""

    ATTENTION = "attention"
    MOE = "moe"


@dataclass(frozen=True, kw_only=True, slots=True)
class Op:
    name: str
    op_class: OpClass
    stream: Stream
    flops: float = 0.0
    hbm_bytes: float = 0.0
    precision: str = "bf16"
    comm_s: float = 0.0  # COMM: time on the fabric, from cost.comm
    comm_roofline_s: float = 0.0  # COMM: bytes at the raw link rate
    plane: str = ""  # COMM: the link whose bytes set the roofline (a plane's name, or the CPU link)
    launches: int = 1
    compute_eff: float = 0.0  # GEMM: the kernel curve's share of peak at this op's shape (0: the chip's flat value)


def _efficiency(chip: ChipSpec, op: Op) -> tuple[float, float]:
    e, op_class = chip.efficiency, op.op_class
    if op_class == OpClass.GEMM:
        return op.compute_eff or e.gemm_compute.value, e.gemm_memory.value
    if op_class == OpClass.ATTENTION:
        return e.attention_compute.value, e.attention_memory.value
    return e.vector_compute.value, e.vector_memory.value


def compute_s(op: Op, chip: ChipSpec, core_share: float = 1.0) -> float:
    if op.op_class == OpClass.COMM or not op.flops:
        return 0.0
    eff_c, _ = _efficiency(chip, op)
    sustained = chip.efficiency.gemm_serving.value if op.op_class == OpClass.GEMM else 1.0
    return op.flops / (eff_c * sustained * chip.die.peak_flops(op.precision) * core_share)


def memory_s(op: Op, chip: ChipSpec) -> float:
    if op.op_class == OpClass.COMM:
        return 0.0
    _, eff_m = _efficiency(chip, op)
    return op.hbm_bytes / (eff_m * chip.hbm_bw_bytes_per_s_per_die)


def op_time_s(op: Op, chip: ChipSpec, core_share: float = 1.0) -> float:
    """Calibrated time of one op on one die, launch overhead included."""
    launch = op.launches * chip.launch_us.value * 1e-6
    if op.op_class == OpClass.COMM:
        return op.comm_s + launch
    return max(compute_s(op, chip, core_share), memory_s(op, chip)) + launch


def roofline_s(op: Op, chip: ChipSpec) -> float:
    """Speed of light: peak compute or peak bandwidth, whichever binds, no overheads."""
    if op.op_class == OpClass.COMM:
        return op.comm_roofline_s
    return max(op.flops / chip.die.peak_flops(op.precision), op.hbm_bytes / chip.hbm_bw_bytes_per_s_per_die)


def compute_sol_s(op: Op, chip: ChipSpec, core_share: float = 1.0) -> float:
    """The op's FLOPs at peak on ``core_share`` of the die's cores (0 for communication)."""
    if op.op_class == OpClass.COMM or not op.flops:
        return 0.0
    return op.flops / (chip.die.peak_flops(op.precision) * core_share)


def memory_sol_s(op: Op, chip: ChipSpec) -> float:
    """The op's HBM bytes at peak bandwidth (0 for communication)."""
    if op.op_class == OpClass.COMM:
        return 0.0
    return op.hbm_bytes / chip.hbm_bw_bytes_per_s_per_die
