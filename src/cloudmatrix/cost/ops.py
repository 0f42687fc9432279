"""Operator descriptors: what one op on one die does (its shape, precision, kernel class, stream, the bytes
it moves through HBM or over which link, and for a collective its kind and group), with no prices. The
builders (`cost/layers.py`, `cost/moe.py`, `cost/sparse_attention.py`, `cost/kernels.py`) make them;
`cost/pricing.py` prices them in one place."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OpClass(StrEnum):
    GEMM = "gemm"
    ATTENTION = "attention"
    VECTOR = "vector"
    COMM = "comm"


class Stream(StrEnum):
    """Which decode microbatch stream an op runs on (P3 §4.2.3)."""

    ATTENTION = "attention"
    MOE = "moe"


class LinkRole(StrEnum):
    """The link a transfer crosses: a plane of the system, or the CPU link of offloaded experts."""

    SCALE_UP = "scale_up"
    SCALE_OUT = "scale_out"
    STORAGE = "storage"
    CPU = "cpu"


class Transfer(StrEnum):
    """How a transfer is priced (`cost/comm.py`): a bulk collective by DMA, a fused EP dispatch or combine,
    a cache read from the EMS pool, or a stream over the CPU link."""

    BULK = "bulk"
    DISPATCH = "dispatch"
    COMBINE = "combine"
    CACHE_LOAD = "cache_load"
    CPU_STREAM = "cpu_stream"


@dataclass(slots=True)
class Leg:
    """``bytes`` through one die's link of ``role``; ``peers``: the collective's peers (bulk) or the EP
    group (dispatch, combine); ``local``: the group stays inside a node."""

    transfer: Transfer
    role: LinkRole
    bytes: float
    peers: int = 0
    local: bool = False


@dataclass(kw_only=True, slots=True)
class Op:
    """Not frozen only because frozen dataclasses are slow to make; nothing mutates an op after it is built."""

    name: str
    op_class: OpClass
    stream: Stream
    flops: float = 0.0
    hbm_bytes: float = 0.0
    precision: str = "bf16"  # the format the op computes in
    kernel: str = ""  # the measured curve family priced at ``rows`` ("dense", "grouped", "attention"; "": flat)
    rows: float = 0.0  # GEMM: token rows per weight matrix (the kernel's M); fused attention: keys per query row
    weights: str = ""  # GEMM: the weights' stored format (a curve applies where measured with weights so stored)
    split: int = 1  # grouped GEMM: ways each expert's matrices are split (expert TP), as its curve was measured
    groups: float = 0.0  # grouped GEMM: expert matrices the die runs over (its share depends on them past 512 rows)
    legs: tuple[Leg, ...] = ()  # COMM: parallel legs; the slowest sets the time
    launches: int = 1


_new = object.__new__


def new_op(
    name: str,
    op_class: OpClass,
    stream: Stream,
    flops: float = 0.0,
    hbm_bytes: float = 0.0,
    precision: str = "bf16",
    kernel: str = "",
    rows: float = 0.0,
    weights: str = "",
    split: int = 1,
    groups: float = 0.0,
    legs: tuple[Leg, ...] = (),
) -> Op:
    """``Op(...)`` with its fields in order: the builders make their ops through this. Calling a class with
    keywords costs about 8,000 instructions in Python 3.11 (the keywords go through a dict into its
    ``__init__``), as much as pricing the op; filling the slots of a new instance here costs about 3,000."""
    op = _new(Op)
    op.name = name
    op.op_class = op_class
    op.stream = stream
    op.flops = flops
    op.hbm_bytes = hbm_bytes
    op.precision = precision
    op.kernel = kernel
    op.rows = rows
    op.weights = weights
    op.split = split
    op.groups = groups
    op.legs = legs
    op.launches = 1
    return op
