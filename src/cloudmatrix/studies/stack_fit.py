"""Fitting the serving-stack constants (``data/stacks.yaml``) on ``fitted``-role validation rows only.

At low concurrency (``FIT_MAX_CONCURRENCY`` clients or fewer) a request neither queues nor shares its steps
with many others, so what the device model leaves out of the measured TPOT is the host time of each step,
and what it leaves out of TTFT is the stack's fixed per-request time. The fit runs on the analytic path,
which stands in for the simulation there (and keeps `calibrate` fast):
- TPOT = one decode step of the ``conc`` running sequences, + the step overhead;
- TTFT = the steps a prompt waits at a busy engine (``catalog.stack_loop.prompt_wait_steps``: half the running
  one, the whole step an overlapping scheduler has launched behind it (SGLang, TensorRT-LLM), and (N - 1) / 2
  more where the scheduler takes in new requests every N decode steps, SGLang's --scheduler-recv-interval;
  none on an idle engine), then the step(s) that prefill the prompt next to the decode batch (co-located:
  alone for a prefill-first engine; prefill batch and KV hand-off when disaggregated), each + the step
  overhead, + the request overhead.
Each constant is the least-squares offset (the mean gap) over its (stack, chip family) rows, clamped at
zero: host time cannot be negative. MTP rows are left out (a step there yields several tokens), and so are
the rows of a (stack, family) whose gap another constant fitted on them takes (a family's own cost per op of
the engine's captured graph, SGLang on CDNA; a stack's graph cost per op on Ascend: ``graph_fit``, fitted
under these host times).
A stack's ``default`` entry is fitted on all its rows, every family pooled: the gap is the engine's (its
scheduler, graph launches and kernels' small-batch overheads run the same code on any accelerator), so a
family with no rows of its own (SGLang on AMD) is priced with the engine's time, not with none.

The same gaps per op of the step (``fit_per_op``: the least-squares cost per op launch of the decode step,
through zero) are what an engine with no rows of its own is priced with out of group (``holdout``): measured
per op, the engines' gaps on one chip family agree far better than their offsets (docs/validation.md §9), and
a model with more ops per step pays more; there each row's engine's own prior count comes off its gap first
(``counted``), so what the other engines' rows lend is the share every engine pays beyond its own kernels.
Across chip families the gap per op follows the chip's cost per captured kernel node (``graph_task_us``:
Blackwell's is 0.6 times Hopper's, and the engines' gaps per op fall 0.5-0.64 times), so out of group it is
fitted in those units (``fit_per_op(per_kernel=True)``) and priced on the held-out chip's own cost per kernel."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudmatrix.catalog.corpus import chip_family, load_corpora
from cloudmatrix.catalog.hardware import Hardware, load_hardware
from cloudmatrix.catalog.model_spec import ModelSpec
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stack_loop import prompt_wait_steps, stack_overlaps, stack_scheduling
from cloudmatrix.catalog.stacks import DEFAULT_FAMILY, stack_costs, stack_graph
from cloudmatrix.catalog.validation import RoleLayout, ValidationRow
from cloudmatrix.cost import comm
from cloudmatrix.deploy import Deployment, Eplb, Phase, kv_group
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import estimate
from cloudmatrix.studies.validate_run import TWIN_PRECISION, redundant_experts, twin_layout

FIT_MAX_CONCURRENCY = 8
# The corpora the catalog's stack constants are fitted on. Corpora that joined later (inferencemax-more,
# sglang-ascend) have fitted-role rows that no constant is fitted on: refitting on them was measured and not
# adopted (docs/validation.md §9): their gaps are device-model misses that grow with the ISL and shrink with
# the TP degree (vLLM on Hopper: 1.7 ms per step at 1K TP8, 5.7 ms at 8K TP1), which an offset fitted on both
# bands carries to neither.
FIT_CORPORA = ("inferencemax-public", "published")


@dataclass(frozen=True, kw_only=True)
class BaseTimes:
    """Device-only times of a low-concurrency row, and how many engine steps its TTFT holds."""

    tpot_ms: float
    ttft_ms: float
    ttft_steps: float
    ops: float = 0.0  # op launches of the decode step (µs the step gains per µs of cost per launch)
    kernel_us: float = 0.0  # the chip's fixed cost per captured kernel node (``graph_task_us``; 0: none stated)


def row_deployment(
    row: ValidationRow, layout: RoleLayout, phase: Phase, isl: float, osl: float, role: str = "fit", **kw: Any
) -> Deployment:
    """A row's role as the twin's deployment at mean lengths ``isl``/``osl``, with its layout, formats and
    expert placement; ``kw`` sets the rest (batch, KV length, chunk, MTP, memory)."""
    model = load_model(row.model)
    return Deployment(
        phase=phase,
        num_chips=layout.chips,
        **twin_layout(row, layout, model, [], role),
        input_len=round(isl),
        output_len=round(osl),
        precision=TWIN_PRECISION[row.weights],
        activation_precision=TWIN_PRECISION[row.activations],
        kv_precision=TWIN_PRECISION[row.kv],
        eplb=Eplb(row.eplb),
        redundant_experts=redundant_experts(row),
        kernels=tuple(row.kernels),
        microbatch=layout.microbatch,
        **kw,
    )


def base_times(row: ValidationRow) -> BaseTimes:
    """The analytic TPOT and TTFT of an end-to-end row without any stack overhead."""
    w, model = row.workload, load_model(row.model)
    conc = w.concurrency or 1
    isl = w.input_len * (1 + w.range_ratio) / 2  # mean of the uniform lengths
    osl = w.output_len * (1 + w.range_ratio) / 2
    pool = row.aggregated or row.decode
    assert pool is not None
    chips, kv = pool.chips * pool.instances, round(isl + osl / 2)
    decode = row_deployment(row, pool, Phase.DECODE, isl, osl, batch_per_chip=conc / chips, kv_len=kv)
    hw = load_hardware(row.system)
    step_s, bumped_s = steps_at_launch(hw, model, decode)
    ops = (bumped_s - step_s) * 1e6
    # a prompt waits for the running step, the one an overlapping scheduler launched behind it, and the
    # scheduler's next intake (none on an idle engine)
    overlap = stack_overlaps(row.stack, speculative=row.mtp > 0)
    waited = prompt_wait_steps(overlap, pool.recv_interval or 1) if conc > 1 else 0.0
    wait_s = waited * step_s
    if row.aggregated is not None:
        chunks = math.ceil(isl / ((pool.chunk_tokens_per_chip or isl) * pool.chips))
        alone = stack_scheduling(row.stack) == "prefill-first"  # the batch pauses while the prompt prefills
        agg = row_deployment(
            row,
            pool,
            Phase.AGGREGATED,
            isl,
            osl,
            batch_per_chip=0.0 if alone else (conc - 1) / chips,
            chunk_tokens_per_chip=isl / chunks / pool.chips,
            kv_len=kv,
        )
        prefill_s = chunks * estimate(row.system, model, agg).step.step_s
        steps = chunks + waited
    else:
        p = row.prefill
        assert p is not None
        pre = row_deployment(
            row,
            p,
            Phase.PREFILL,
            isl,
            osl,
            tokens_per_chip=max(round(isl / p.chips), 1),
            attention_tp=1,
        )
        est = estimate(row.system, model, pre)
        nics = kv_group(est.plan.tp, 1)
        handoff = comm.kv_handoff_s(est.plan.hardware, model, round(isl), TWIN_PRECISION[row.kv], nics)
        prefill_s = est.step.step_s + handoff
        steps = 1.0
    task = hw.chip.graph_task_us
    kernel_us = task.value if task is not None else 0.0
    return BaseTimes(
        tpot_ms=step_s * 1e3, ttft_ms=(wait_s + prefill_s) * 1e3, ttft_steps=steps, ops=ops, kernel_us=kernel_us
    )


def steps_at_launch(hw: Hardware, model: ModelSpec, dep: Deployment) -> tuple[float, float]:
    """A deployment's analytic step (s) at the chip's cost per op launch and at 1 µs more: their difference
    counts the step's launches (the µs the step gains per µs of cost per launch, overlap included)."""
    bumped = Sourced(value=hw.chip.launch_us.value + 1.0, source="a step's launch count")
    chip = hw.chip.model_copy(update={"launch_us": bumped})
    step_s = estimate(hw, model, dep).step.step_s
    return step_s, estimate(hw.model_copy(update={"chip": chip}), model, dep).step.step_s


def calibrated(value: Sourced | None) -> bool:
    """Whether a catalog constant was fitted on measured rows (a CALIB source)."""
    return value is not None and value.source.startswith("CALIB")


def gap_taken_elsewhere(stack: str, family: str) -> bool:
    """Whether another constant fitted on rows takes this (stack, family)'s gap: a family's own cost per op of
    the engine's graph, or the stack's graph cost per op on a chip with graph start-ups (both ``graph_fit``)."""
    costs, graph = stack_costs(stack, family), stack_graph(stack)
    own = costs is not None and calibrated(costs.op_launch_us)
    return own or (graph is not None and calibrated(graph.op_launch_us))


def fit_rows(rows: list[ValidationRow]) -> dict[tuple[str, str], list[ValidationRow]]:
    """(stack, family) -> the fitted-role end-to-end rows at low concurrency without MTP; (stack, ``default``)
    -> every family's of them (the engine's pooled fit)."""
    out: dict[tuple[str, str], list[ValidationRow]] = defaultdict(list)
    for r in rows:
        conc = r.workload.concurrency
        if r.role != "fitted" or r.kind != "e2e" or r.mtp or conc is None or conc > FIT_MAX_CONCURRENCY:
            continue
        family = chip_family(r.system)
        if not gap_taken_elsewhere(r.stack, family):
            out[(r.stack, family)].append(r)
            out[(r.stack, DEFAULT_FAMILY)].append(r)
    return dict(out)


@dataclass(frozen=True, kw_only=True)
class GroupFit:
    """One (stack, family)'s constants and the gaps they leave (TPOT gaps in µs, TTFT gaps in ms)."""

    step_overhead_us: float
    request_overhead_ms: float
    tpot_gaps: list[float]
    ttft_gaps: list[float]


def fittable(members: list[ValidationRow]) -> list[tuple[ValidationRow, BaseTimes]]:
    """Each fit row with its device-only times; refused rows carry no gap."""
    pairs = []
    for r in members:
        try:
            pairs.append((r, base_times(r)))
        except CloudMatrixError:
            continue
    return pairs


def fit_pairs(rows: list[ValidationRow]) -> dict[tuple[str, str], list[tuple[ValidationRow, BaseTimes]]]:
    """``fit_rows`` with each row's device-only times (each row priced once, though it fits two entries)."""
    times: dict[str, list[tuple[ValidationRow, BaseTimes]]] = {}
    out = {}
    for key, members in fit_rows(rows).items():
        out[key] = [p for r in members for p in times.setdefault(r.id, fittable([r]))]
    return out


def fit_group(pairs: list[tuple[ValidationRow, BaseTimes]]) -> GroupFit:
    """The least-squares offsets (mean gaps, clamped at zero) of one (stack, family)'s rows."""
    tpot = [(r.measured["tpot_ms"] - b.tpot_ms) * 1e3 for r, b in pairs if "tpot_ms" in r.measured]
    step_us = max(statistics.fmean(tpot), 0.0) if tpot else 0.0
    ttft = [
        r.measured["ttft_ms"] - b.ttft_ms - b.ttft_steps * step_us / 1e3 for r, b in pairs if "ttft_ms" in r.measured
    ]
    request_ms = max(statistics.fmean(ttft), 0.0) if ttft else 0.0
    return GroupFit(step_overhead_us=step_us, request_overhead_ms=request_ms, tpot_gaps=tpot, ttft_gaps=ttft)


@dataclass(frozen=True, kw_only=True)
class PerOpFit:
    """An engine law per op of the step: the step's cost per op launch (µs) and the fixed request time (ms)."""

    op_us: float
    request_overhead_ms: float
    rows: int


def fit_per_op(
    pairs: list[tuple[ValidationRow, BaseTimes]], per_kernel: bool = False, counted: Mapping[str, float] | None = None
) -> PerOpFit:
    """The least-squares cost per op launch of the decode step through zero (each row's TPOT gap over its
    launches: ``sum(gap * ops) / sum(ops^2)``), clamped at zero, then the request overhead as the mean TTFT gap
    left with each of its steps priced at that cost per op. ``per_kernel``: the cost in units of each row's
    chip's cost per captured kernel node (``op_us`` is then kernels per op; rows whose chip states none are left
    out), so a fit on one GPU generation carries to another by the chip's own cost per kernel. ``counted``: the
    kernels per op each row's engine is known to run (stack -> its prior), taken off its gap first, so the fit
    is what every engine pays per op beyond its own count (it may come out negative: the priors over-count)."""
    if per_kernel:
        pairs = [(r, b) for r, b in pairs if b.kernel_us > 0]

    def launches(b: BaseTimes) -> float:
        return b.ops * b.kernel_us if per_kernel else b.ops

    def own(r: ValidationRow) -> float:  # the row's engine's own count per op (0 without ``counted``)
        return counted[r.stack] if counted is not None else 0.0

    tpot = [
        ((r.measured["tpot_ms"] - b.tpot_ms) * 1e3 - own(r) * launches(b), launches(b))
        for r, b in pairs
        if "tpot_ms" in r.measured
    ]
    den = sum(n * n for _, n in tpot)
    op_us = sum(g * n for g, n in tpot) / den if den > 0 else 0.0
    op_us = op_us if counted is not None else max(op_us, 0.0)
    ttft = [
        r.measured["ttft_ms"] - b.ttft_ms - b.ttft_steps * (op_us + own(r)) * launches(b) / 1e3
        for r, b in pairs
        if "ttft_ms" in r.measured
    ]
    request_ms = max(statistics.fmean(ttft), 0.0) if ttft else 0.0
    return PerOpFit(op_us=op_us, request_overhead_ms=request_ms, rows=len(pairs))


def fit_stack_costs(rows: list[ValidationRow] | None = None) -> dict[str, dict[str, Any]]:
    """Every fittable stack constant: the fit beside the catalog value, with its rows and the rms gap left
    (default: on the corpora the catalog was fitted on)."""
    constants: dict[str, dict[str, Any]] = {}
    rows = rows if rows is not None else load_corpora(list(FIT_CORPORA))
    for (stack, family), pairs in sorted(fit_pairs(rows).items()):
        costs = stack_costs(stack, family)
        assert costs is not None
        fit = fit_group(pairs)
        for name, value, gaps, current in (
            ("step_overhead_us", fit.step_overhead_us, fit.tpot_gaps, costs.step_overhead_us.value),
            ("request_overhead_ms", fit.request_overhead_ms, fit.ttft_gaps, costs.request_overhead_ms.value),
        ):
            if gaps:
                rms = statistics.fmean((g - value) ** 2 for g in gaps) ** 0.5
                constants[f"stacks.{stack}.{family}.{name}"] = {
                    "fitted": value,
                    "catalog": current,
                    "rows": f"{len(gaps)} fitted rows at conc <= {FIT_MAX_CONCURRENCY} (rms gap left {rms:.3g})",
                }
    return constants
