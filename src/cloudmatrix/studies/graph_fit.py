"""Fitting a stack's fixed cost per op of its captured device graph (``graph.op_launch_us`` in
``data/stacks.yaml``) on ``fitted``-role validation rows only.

On Ascend the chip's ``launch_us`` is what a compiled, fused static graph pays per op (CloudMatrix-Infer:
fitted to 0 on the paper's batch-8 row). A stack that captures its PyTorch ops one by one (SGLang's NPUGraph)
dispatches several smaller tasks for each of the twin's ops, each with its own task start and AIC/AIV
synchronisation; no published CANN figure gives that cost per task, so it is fitted here, per op of the
twin, on the stack's decode rows. The graph start-ups its host does not hide are priced from P3 §4.2.4
(``graph_launch_us``) before the fit, so they are not absorbed by it.

The fit runs on the analytic path (one decode step of the row's running sequences, as `stack_fit` does): the
step is linear in the per-op cost (``step = base + ops · v``), so the least-squares ``v`` over the rows'
relative TPOT gaps has a closed form. Rows the twin refuses carry no gap."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from cloudmatrix.catalog.corpus import load_rows
from cloudmatrix.catalog.hardware import Hardware, chip_family, load_hardware
from cloudmatrix.catalog.models import load_model
from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import GraphExecution, stack_graph
from cloudmatrix.catalog.validation import ValidationRow
from cloudmatrix.deploy import Deployment, Phase, mtp_tokens_per_step
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.estimate import estimate
from cloudmatrix.studies.stack_fit import row_deployment
from cloudmatrix.studies.validate_run import launched_reserve

# The corpora whose fitted-role rows the per-op graph cost is fitted on (SGLang on Atlas A3: DeepSeek-R1 with EP
# dispatch and MTP, Qwen3 with TP and EAGLE-3).
GRAPH_FIT_CORPORA = ("sglang-ascend", "formats-2026")


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


def _with_launch(hw: Hardware, launch_us: float) -> Hardware:
    chip = hw.chip.model_copy(update={"launch_us": Sourced(value=launch_us, source="graph fit: trial value")})
    return hw.model_copy(update={"chip": chip})


def _decode_deployment(row: ValidationRow) -> Deployment | None:
    """A row's decode step as a deployment: a steady row's stated batch, or an end-to-end row's running
    sequences spread over its decode pool; None where the row has no decode pool or no TPOT."""
    pool, w = row.decode, row.workload
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
    graph = stack_graph(row.stack)
    own = graph.op_launch_us.value if graph is not None else 0.0
    chip0 = hw.chip.launch_us.value
    for reserve in (d.reserve_gb, hw.chip.runtime_reserve_gb.value):
        dep = dataclasses.replace(d, reserve_gb=reserve)
        try:
            s0 = estimate(_with_launch(hw, chip0), model, dep).step.step_s * 1e3
            s1 = estimate(_with_launch(hw, chip0 + 1.0), model, dep).step.step_s * 1e3
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
    # relative gap_i(v) = (base_i + ops_i v) / (acc_i tpot_i) - 1 = a_i + b_i v
    num = den = 0.0
    for g in fit_rows:
        a = g.base_ms / g.accepted / g.tpot_ms - 1
        b = g.ops / g.accepted / g.tpot_ms
        num -= a * b
        den += b * b
    v = max(num / den, 0.0) if den > 0 else 0.0
    return GraphFit(stack=stack, op_launch_us=v, rows=fit_rows)


def graph_refit(held: Collection[str], stack: str = "sglang-ascend") -> tuple[GraphExecution, str] | None:
    """The stack's graph costs with the per-op cost refitted without the ``held`` row ids (a hold-out group),
    and a note; None where none of its fit rows is held. With no fit row left, the per-op cost falls back to
    0: the chip's ``launch_us`` alone, as for a stack with no graph cost per op. Call it under the group's
    refitted host times (``overridden_costs``): the fit prices the rows' steps with them."""
    rows = [r.id for r, _ in graph_fit_rows(stack)]
    graph = stack_graph(stack)
    kept = [i for i in rows if i not in held]
    if graph is None or len(kept) == len(rows):
        return None
    if kept:
        value = fit_graph_op_launch(stack, held).op_launch_us
        source = f"hold-out refit on {len(kept)} of {len(rows)} fit rows"
        note = f"{stack}/graph: op_launch_us refitted on {len(kept)} of {len(rows)} fit rows ({value:.2f} µs/op)"
    else:
        value, source = 0.0, "borrowed: no graph cost per op (the chip's launch_us alone)"
        note = f"{stack}/graph: no fit rows left; op_launch_us falls back to 0 µs/op (the chip's launch_us alone)"
    return graph.model_copy(update={"op_launch_us": Sourced(value=value, source=source)}), note
