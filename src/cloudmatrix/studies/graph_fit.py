"""Fitting a stack's fixed cost per op of its captured device graph (``graph.op_launch_us`` in
``data/stacks.yaml``) on ``fitted``-role validation rows only.

On Ascend the chip's ``launch_us`` is what a compiled, fused static graph pays per op (CloudMatrix-Infer:
fitted to 0 on the paper's batch-8 row). A stack that captures its PyTorch ops one by one (SGLang's NPUGraph)
dispatches several smaller tasks for each of the twin's ops, each with its own task start and AIC/AIV
synchronisation. CANN publishes no cost per task; the chip carries a prior bounded by published measurements
(``graph_task_us``, times the engine's ``tasks_per_op``: the cost where no row may be used, a hold-out), and the
cost is fitted here, per op of the twin, on the stack's decode rows. The graph start-ups its host does not hide
are priced from P3 §4.2.4 (``graph_launch_us``) before the fit, so they are not absorbed by it.

The fit runs on the analytic path (one decode step of the row's running sequences, as `stack_fit` does): the
step is linear in the per-op cost (``step = base + ops · v``), so the least-squares ``v`` over the rows'
relative TPOT gaps has a closed form. Rows the twin refuses carry no gap.

The same cost is fitted per chip family where an engine's captured graph runs on another runtime than the one
its host times were fitted on (``op_launch_us`` of a family entry in ``data/stacks.yaml``): SGLang's HIP graphs
on CDNA, on the fitted-role MI300X rows at low concurrency (``FAMILY_FIT_CORPORA``). Their TPOT exceeds the
twin's decode step by a nearly constant 13-15 ms from 4 to 64 clients, where the per-sequence slope matches,
and ATOM's fused graphs on the same GPUs carry no such gap: a cost per launched op of the engine's graph,
not of the chip and not a per-request time. Where none of those rows may be used (a hold-out of CDNA or of
SGLang) the family entry's prior prices it: its kernels per op beyond the first (``tasks_per_op``, counted
from the engine's source) times the chip's cost per HIP graph node (``graph_task_us``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from cloudmatrix.catalog.corpus import load_corpora, load_rows
from cloudmatrix.catalog.hardware import chip_family, load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import GraphExecution, StackCosts, load_stack, stack_costs, stack_graph, stack_ids
from cloudmatrix.catalog.validation import ValidationRow
from cloudmatrix.cost.pricing import graph_op_launch_us
from cloudmatrix.deploy import Deployment, Phase, mtp_tokens_per_step
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.studies.stack_fit import FIT_MAX_CONCURRENCY, calibrated, row_deployment, steps_at_launch
from cloudmatrix.studies.validate_run import launched_reserve

# The corpora whose fitted-role rows the per-op graph cost is fitted on (SGLang on Atlas A3: DeepSeek-R1 with EP
# dispatch and MTP, Qwen3 with TP and EAGLE-3).
GRAPH_FIT_CORPORA = ("sglang-ascend", "formats-2026")
# The corpora whose fitted-role rows a chip family's own cost per op is fitted on (SGLang on MI300X).
FAMILY_FIT_CORPORA = ("inferencemax-more",)


@dataclass(frozen=True, kw_only=True)
class GraphRow:
    """One fit row: its measured TPOT, and the analytic step without the stack's per-op cost and per 1 µs of it."""

    row_id: str
    tpot_ms: float
    base_ms: float  # the step at a per-op cost of 0
    ops: float  # ms the step gains per µs of cost per op (the op launches of one step, / 1000)
    accepted: float  # tokens per sequence per step


@dataclass(frozen=True, kw_only=True)
class GraphFit:
    stack: str
    op_launch_us: float
    rows: list[GraphRow]

    def gaps_pct(self) -> dict[str, float]:
        """Each row's TPOT error at the fit, %."""
        v = self.op_launch_us
        return {r.row_id: ((r.base_ms + r.ops * v) / r.accepted / r.tpot_ms - 1) * 100 for r in self.rows}


def _decode_deployment(row: ValidationRow) -> Deployment | None:
    """A row's decode step as a deployment: a steady row's stated batch, or an end-to-end row's running
    sequences spread over its decode (or co-located) pool; None where the row has no such pool or no TPOT."""
    pool, w = row.decode or row.aggregated, row.workload
    if pool is None or row.kind == "prefill" or "tpot_ms" not in row.measured:
        return None
    isl: float
    osl: float
    if row.kind == "decode":
        batch, isl, osl, kv = w.batch_per_chip, w.input_len, w.output_len, w.kv_len
    else:
        if w.concurrency is None:
            return None
        isl, osl = w.input_len * (1 + w.range_ratio) / 2, w.output_len * (1 + w.range_ratio) / 2
        batch, kv = w.concurrency / (pool.chips * pool.instances), round(isl + osl / 2)
    return row_deployment(
        row,
        pool,
        Phase.DECODE,
        isl,
        osl,
        role="decode",
        batch_per_chip=batch,
        kv_len=kv,
        mtp=row.mtp,
        mtp_acceptance=row.mtp_acceptance or 0.0,
        speculation=row.speculation,
        reserve_gb=launched_reserve(row, pool),
        stack=row.stack,
    )


def graph_row(row: ValidationRow) -> GraphRow | None:
    """A row's analytic decode step at two per-op costs; None where it has no decode TPOT or the twin refuses it
    (at its launched memory setting and at the chip's runtime reserve, as validation runs steady rows)."""
    d = _decode_deployment(row)
    if d is None:
        return None
    model, hw = load_model(row.model), load_hardware(row.system)
    own = graph_op_launch_us(hw, row.stack)
    for reserve in (d.reserve_gb, hw.chip.runtime_reserve_gb.value):
        dep = dataclasses.replace(d, reserve_gb=reserve)
        try:
            s0, s1 = (s * 1e3 for s in steps_at_launch(hw, model, dep))
        except CloudMatrixError:
            continue
        ops = s1 - s0
        accepted = mtp_tokens_per_step(row.mtp, row.mtp_acceptance or 0.0)
        tpot = row.measured["tpot_ms"]
        return GraphRow(row_id=row.id, tpot_ms=tpot, base_ms=s0 - ops * own, ops=ops, accepted=accepted)
    return None


def graph_fit_rows(stack: str = "sglang-ascend") -> list[tuple[ValidationRow, str]]:
    """The stack's fitted-role rows on chips with a graph start-up that its per-op cost is fitted on, each with
    its corpus."""
    return [
        (r, name)
        for name in GRAPH_FIT_CORPORA
        for r in load_rows(name)
        if r.role == "fitted" and r.stack == stack and chip_family(r.system) == "ascend"
    ]


def fit_graph_op_launch(stack: str = "sglang-ascend", held: Collection[str] = ()) -> GraphFit:
    """Least squares over the stack's fitted-role decode rows on chips with a graph start-up (without the
    ``held`` row ids): minimise the sum of squared relative TPOT gaps, clamped at zero (a cost cannot be
    negative)."""
    rows = [r for r, _ in graph_fit_rows(stack) if r.id not in held]
    fit_rows = [g for g in (graph_row(r) for r in rows) if g is not None]
    return GraphFit(stack=stack, op_launch_us=least_squares_op_launch(fit_rows), rows=fit_rows)


def least_squares_op_launch(fit_rows: list[GraphRow]) -> float:
    """The cost per op minimising the rows' squared relative TPOT gaps, clamped at zero (0 with no rows)."""
    # relative gap_i(v) = (base_i + ops_i v) / (acc_i tpot_i) - 1 = a_i + b_i v
    num = den = 0.0
    for g in fit_rows:
        a = g.base_ms / g.accepted / g.tpot_ms - 1
        b = g.ops / g.accepted / g.tpot_ms
        num -= a * b
        den += b * b
    return max(num / den, 0.0) if den > 0 else 0.0


def graph_refit(held: Collection[str], stack: str = "sglang-ascend") -> tuple[GraphExecution, str] | None:
    """The stack's graph costs with the per-op cost refitted without the ``held`` row ids (a hold-out group),
    and a note; None where none of its fit rows is held. With no fit row left, the per-op cost falls back to
    the prior fitted on no row (``op_launch_us`` None: the stack's ``tasks_per_op`` times the chip's
    ``graph_task_us``, a runtime property that carries to a held-out group). Call it under the group's
    refitted host times (``overridden_costs``): the fit prices the rows' steps with them."""
    rows = [r.id for r, _ in graph_fit_rows(stack)]
    graph = stack_graph(stack)
    kept = [i for i in rows if i not in held]
    if graph is None or len(kept) == len(rows):
        return None
    if not kept:
        note = (
            f"{stack}/graph: no fit rows left; op_launch_us falls back to the prior "
            f"({graph.tasks_per_op.value:g} tasks per op x the chip's node cost and kernel floor)"
        )
        return graph.model_copy(update={"op_launch_us": None}), note
    value = fit_graph_op_launch(stack, held).op_launch_us
    source = f"hold-out refit on {len(kept)} of {len(rows)} fit rows"
    note = f"{stack}/graph: op_launch_us refitted on {len(kept)} of {len(rows)} fit rows ({value:.2f} µs/op)"
    return graph.model_copy(update={"op_launch_us": Sourced(value=value, source=source)}), note


def family_fit_rows(stack: str, family: str) -> list[ValidationRow]:
    """The rows a family's own cost per op is fitted on: the stack's fitted-role end-to-end rows on that
    family at low concurrency without MTP (where the step, not the queue, sets TPOT; as ``stack_fit``)."""
    return [
        r
        for r in load_corpora(list(FAMILY_FIT_CORPORA))
        if r.role == "fitted"
        and r.stack == stack
        and chip_family(r.system) == family
        and r.kind == "e2e"
        and not r.mtp
        and (r.workload.concurrency or 0) <= FIT_MAX_CONCURRENCY
    ]


def fit_family_op_launch(stack: str, family: str) -> GraphFit:
    """A stack's own cost per op of its captured graph on a chip family, least squares over its fit rows."""
    fit_rows = [g for g in (graph_row(r) for r in family_fit_rows(stack, family)) if g is not None]
    return GraphFit(stack=stack, op_launch_us=least_squares_op_launch(fit_rows), rows=fit_rows)


def family_op_launch_entries() -> list[tuple[str, str]]:
    """The (stack, family) entries that carry a cost per op of their own, fitted on rows (CALIB)."""
    out = []
    for stack in stack_ids():
        for family in load_stack(stack).families:
            costs = stack_costs(stack, family)
            if costs is not None and calibrated(costs.op_launch_us):
                out.append((stack, family))
    return out


def family_op_fit_rows() -> dict[tuple[str, str], list[ValidationRow]]:
    """Every family cost per op fitted on rows, with the rows it was fitted on."""
    return {(s, f): family_fit_rows(s, f) for s, f in family_op_launch_entries()}


def refit_op_launch(
    stack: str, family: str, rows: list[ValidationRow], held: set[str]
) -> tuple[StackCosts, str] | None:
    """A family's costs with its cost per op refitted without the ``held`` rows, priced under the host-time
    overrides in force; where none is left the fit is dropped and the entry's prior prices it (its
    ``tasks_per_op`` times the chip's ``graph_task_us``: SGLang's HIP graphs on CDNA), or nothing where it
    states no count. None where none of its fit rows is held."""
    kept = [r for r in rows if r.id not in held]
    if len(kept) == len(rows):
        return None
    costs = stack_costs(stack, family)
    assert costs is not None
    fit_rows = [g for g in (graph_row(r) for r in kept) if g is not None]
    if not fit_rows:
        tasks = costs.tasks_per_op
        prior = "priced without it"
        if tasks is not None:
            prior = f"falls back to the prior ({tasks.value:g} tasks per op x the chip's node cost and kernel floor)"
        note = f"{stack}/{family}: no cost-per-op fit rows left; {prior}"
        return costs.model_copy(update={"op_launch_us": None}), note
    v = least_squares_op_launch(fit_rows)
    op = Sourced(value=v, source=f"hold-out refit on {len(fit_rows)} of {len(rows)} cost-per-op fit rows")
    note = f"{stack}/{family}: cost per op refitted on {len(fit_rows)} of {len(rows)} fit rows ({v:.1f} µs/op)"
    return costs.model_copy(update={"op_launch_us": op}), note
