"""GEMM kernel efficiency by shape (``data/kernels/``): published microbenchmarks (``microbench.yaml``) and
the curves reduced from them (``curves.yaml``, by ``studies/kernel_fit.py``). A curve gives a kernel's
achieved share of the chip's peak for its compute format against M, the rows each weight matrix multiplies
(tokens per expert for grouped MoE GEMMs). FLOPs per weight byte depend only on M and the weight format, so
the share measured at one shape carries to every shape with the same M: weight-bound at small M (the share
grows with M while the time stays flat), tile- and wave-limited in between, saturated at large M. Between
measured M the curve is interpolated in log-log; beyond them it is held, so below the smallest M the
roofline's memory term takes over.

A grouped curve reduced from decode-shaped tables (8-32 experts per die, at most 512 rows per expert) is
carried beyond them, never by the decode plateau (studies/kernel_fit.py): at its last M the share depends on
how many experts the die runs (``levels``, from every table of the kernel there, the prefill-shaped ones
holding 128-256 experts per die at up to 16K tokens included), and beyond it grows as the kernel's
``growth_tables`` (shapes of few experts that reach 4,096 rows per expert) measure (``growth``). A curve whose
weights are stored narrower than its compute format (``weights``: W4A16) applies only to such GEMMs, and a
curve measured with each expert split ``split`` ways (expert TP) applies nearest that split.

An ``attention`` curve is a fused attention kernel's share against the key length each query row runs over
(the measured S0 = S1 sequence), for the stacks that name it (stacks.yaml ``kernels: {attention: ...}``);
its rows are one call of ``groups`` heads, ``m`` query rows, ``n`` keys and head dimension ``k``.

A curve (and its tables) may state the chip it was measured on (``measured_on``) where it prices several
(``chips``): a share of peak is a rate against the nominal peak, and on a chip that holds a higher clock under
load the same kernel runs faster by the ratio of the clocks. That ratio is the two chips' sustained GEMM
ceilings (hardware ``gemm_compute``: the share of peak each sustains under a dense GEMM, i.e. the clock it
holds there over the peak's clock), so on another chip the share is scaled by target over measured ceiling,
and never above the target's own ceiling (no kernel outruns the clock it holds). Only compute shares are
scaled: a sustained-clock ratio speeds every on-chip-bound kernel alike, while HBM time (the memory term)
does not follow the core clock. A curve without ``measured_on`` prices every chip it lists unchanged.

The chip's serving factor (hardware ``gemm_serving``) was fitted over library tables of a kernel's best case
(DeepGEMM's README) and the flat efficiencies; a curve measured through an engine's own module in its framework
(``engine_measured``: AIConfigurator's SGLang collection) is already what that engine runs, so the factor does
not multiply it (as no factor multiplies AIConfigurator's tables on Blackwell)."""

from __future__ import annotations

from bisect import bisect_right
from functools import cache
from math import exp, log
from typing import Literal

from cloudmatrix.catalog.hardware import load_chip
from cloudmatrix.catalog.record import Record, field
from cloudmatrix.catalog.sourced import DATA_DIR, parse_file
from cloudmatrix.inputs import InputError

KERNELS_DIR = DATA_DIR / "kernels"
MICROBENCH_PATH = KERNELS_DIR / "microbench.yaml"
CURVES_PATH = KERNELS_DIR / "curves.yaml"
Op = Literal["dense", "grouped", "attention"]


class MoeShape(Record):
    hidden: int
    intermediate: int
    experts: int
    top_k: int


class BenchRow(Record):
    """One measurement: a GEMM (m x k by k x n, ``groups`` of them) or a whole MoE layer of ``tokens``."""

    groups: int = 1
    m: float | None = None
    n: int | None = None
    k: int | None = None
    tokens: float | None = None
    local_experts: int | None = None
    latency_us: float | None = field(default=None, gt=0)
    tflops: float | None = field(default=None, gt=0)


class BenchTable(Record):
    id: str
    kernel: str
    op: Op
    chips: list[str]
    format: str
    source: str
    note: str = ""
    measured_on: str | None = None  # the chip of ``chips`` the rows were measured on, where the source says
    weights: str | None = None  # stored format where narrower than the compute format (W4A16: fp4)
    moe_tp: int = field(default=1, ge=1)  # each expert's matrices split this many ways (expert TP)
    moe_shape: MoeShape | None = None
    rows: list[BenchRow]


class Microbench(Record):
    tables: list[BenchTable]


class KernelCurve(Record):
    kernel: str
    op: Op
    format: str
    chips: list[str]
    points: list[tuple[float, float]] = field(min_length=1)  # (M, achieved share of peak), M ascending
    source: str
    tables: list[str]  # the microbenchmark tables reduced
    measured_on: str | None = None  # the chip its tables were measured on: others' shares scale (module doc)
    prefill_tables: list[str] = []  # prefill-shaped tables: the level beyond the decode tables' largest M
    growth_tables: list[str] = []  # tables reaching larger M: the growth beyond it
    weights: str | None = None  # stored weight format where narrower than ``format`` (W4A16: fp4)
    split: int = field(default=1, ge=1)  # expert TP the tables were measured at
    levels: list[tuple[float, float]] = []  # (experts per die, share at the last point's M), ascending
    growth: list[tuple[float, float]] = []  # (M, share relative to the last point's M) beyond it, ascending
    engine_measured: bool = False  # measured through the engine's own module: no serving factor (module doc)

    def compute_efficiency(self, m: float, experts: float = 0.0) -> float:
        """The share at M; beyond the last point, for a grouped GEMM over ``experts`` per die (0: as many as
        the most measured), the level there times the measured growth."""
        last = self.points[-1][0]
        if m > last and self.levels and self.growth:
            level = _log_log(self.levels, experts or self.levels[-1][0])
            return level * _log_log([(last, 1.0), *self.growth], m)
        return _log_log(self.points, m)

    def share_on(self, chip: str, m: float, experts: float = 0.0) -> float:
        """The share at M on ``chip``: where the curve was measured on another chip, scaled by the ratio of
        the two chips' sustained GEMM ceilings and capped at the target's (module docstring)."""
        share = self.compute_efficiency(m, experts)
        if self.measured_on is None or chip == self.measured_on:
            return share
        target, measured = sustained_gemm_ceiling(chip), sustained_gemm_ceiling(self.measured_on)
        return min(share * target / measured, target)


@cache
def sustained_gemm_ceiling(chip: str) -> float:
    """The chip's sustained share of peak under a dense GEMM (hardware ``gemm_compute``): its load clock."""
    return load_chip(chip).efficiency.gemm_compute.value


def _log_log(points: list[tuple[float, float]], x: float) -> float:
    """Log-log interpolation between points (ascending), held beyond them."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect_right(xs, x)
    t = (log(x) - log(xs[i - 1])) / (log(xs[i]) - log(xs[i - 1]))
    return exp(log(ys[i - 1]) + t * (log(ys[i]) - log(ys[i - 1])))


class CurveCatalog(Record):
    curves: list[KernelCurve]


@cache
def microbench() -> dict[str, BenchTable]:
    data = parse_file(Microbench, MICROBENCH_PATH)
    return {t.id: t for t in data.tables}


@cache
def curves() -> tuple[KernelCurve, ...]:
    return tuple(parse_file(CurveCatalog, CURVES_PATH).curves)


@cache
def kernel_names() -> tuple[str, ...]:
    """Every kernel with a measured curve, sorted."""
    return tuple(sorted({c.kernel for c in curves()}))


@cache
def kernels_measured_on(chips: tuple[str, ...]) -> tuple[str, ...]:
    """The kernels with a measured curve on any of ``chips``, sorted."""
    return tuple(sorted({c.kernel for c in curves() if any(chip in c.chips for chip in chips)}))


def check_kernels_measured_on(names: tuple[str, ...], chips: tuple[str, ...], chip_name: str) -> None:
    """Every kernel a deployment names has a measured curve on the chip (``chips``: its own id and the chip
    whose curves it takes): one without would price nothing, so naming it is a clear error, not a no-op."""
    measured = kernels_measured_on(chips)
    for name in names:
        if name not in measured:
            expected = f"one of: {', '.join(measured)}" if measured else "none (no kernel is measured on it)"
            raise InputError(f"kernels (--kernels): got {name!r}, not measured on the {chip_name}; expected {expected}")


def check_kernels(names: object) -> tuple[str, ...]:
    """Kernel names a deployment states, as a tuple; an unknown one is a clear error naming it."""
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise InputError(f"kernels (--kernels): got {names!r}; expected a list of kernel names")
    for name in names:
        if name not in kernel_names():
            raise InputError(f"kernels (--kernels): got {name!r}; expected one of: {', '.join(kernel_names())}")
    return tuple(names)


@cache
def kernel_curves(
    chip: str, fmt: str, op: str, kernels: tuple[str, ...] = (), weights: str | None = None, split: int = 1
) -> tuple[KernelCurve, ...]:
    """The measured curves of ``kernels`` for the chip, format and op (weights stored in ``weights`` where
    narrower than the format), each kernel's measured nearest ``split`` (expert TP); with none named (or none
    of them measured) every measured library kernel's (an engine-measured one only where nothing else is).
    Empty where nothing was measured (the chip's flat efficiencies apply)."""
    stored = None if weights == fmt else weights
    matches = tuple(c for c in curves() if chip in c.chips and c.format == fmt and c.op == op and c.weights == stored)
    nearest: dict[str, float] = {}  # per kernel: one kernel's split tables never displace another kernel's
    for c in matches:
        nearest[c.kernel] = min(nearest.get(c.kernel, float("inf")), abs(log(c.split / split)))
    matches = tuple(c for c in matches if abs(log(c.split / split)) == nearest[c.kernel])
    named = tuple(c for c in matches if c.kernel in kernels)
    # unnamed, an engine's own measured module describes that engine, not the chip: library tables first
    return named or tuple(c for c in matches if not c.engine_measured) or matches


def best_share(
    chip: str,
    fmt: str,
    op: str,
    kernels: tuple[str, ...],
    m: float,
    weights: str | None = None,
    split: int = 1,
    experts: float = 0.0,
    priced: str | None = None,
    serving: float = 1.0,
) -> float:
    """The share of peak at M (over ``experts`` per die, grouped GEMMs) on the ``priced`` chip (default:
    ``chip``, whose curves are read) of the fastest of the kernels an engine can pick from (its autotuner
    runs the best tactic per shape), times the chip's ``serving`` factor where the curve is a library table
    (module docstring); 0 without a measurement."""
    found = kernel_curves(chip, fmt, op, kernels, weights, split)
    return max((serving_share(c, priced or chip, m, experts, serving) for c in found), default=0.0)


def serving_share(curve: KernelCurve, chip: str, m: float, experts: float, serving: float) -> float:
    """A curve's share on ``chip`` in serving: the chip's serving factor applies to library tables only."""
    return curve.share_on(chip, m, experts) * (1.0 if curve.engine_measured else serving)
