"""The constants a hold-out group's rows are priced with (``validate --holdout KIND``, ``studies/holdout.py``):
the stack host times refitted without the group's rows, with their fall-backs where it takes every fit row of an
entry, in the order of the evidence's independence: the engine's own rows, then its own published priors, then
other engines' rows only for what is not the engine's (a family: the engine's own law per op of the step fitted
on its other families, in kernels of each chip's cost per captured kernel node, so it follows the priced chip's
generation; a ``like:`` default: the entry it names; a stack with none left anywhere: its own prior kernels per
op plus what the other engines' rows pay per op beyond their own priors, and its own request time; no engine
with rows left: the engine's priors alone), a family's own cost per op of a captured graph refitted or dropped
for its prior, and SGLang-on-Ascend's graph cost per op refitted the same way. Each is an in-memory override
with a note."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cloudmatrix.catalog.sourced import Sourced
from cloudmatrix.catalog.stacks import (
    DEFAULT_FAMILY,
    GRAPH_ENTRY,
    CostsLike,
    Override,
    StackCosts,
    load_stack,
    overridden_costs,
)
from cloudmatrix.catalog.validation import ValidationRow
from cloudmatrix.studies.graph_fit import graph_refit, refit_op_launch
from cloudmatrix.studies.stack_fit import BaseTimes, calibrated, fit_group, fit_per_op

Overrides = dict[tuple[str, str], Override]
GRAPH_STACK = "sglang-ascend"  # the stack whose graph cost per op is fitted on validation rows (graph_fit)


@dataclass(frozen=True, kw_only=True)
class Refit:
    """The constants a group's rows are priced with, and what happened to each refitted entry."""

    overrides: Overrides = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _fitted_entry(stack: str, family: str) -> StackCosts | None:
    """The catalog entry a fit set: the stack's own family entry whose constants are CALIB fits."""
    entry = load_stack(stack).families.get(family)
    if isinstance(entry, StackCosts) and calibrated(entry.step_overhead_us):
        return entry
    return None


def _like_fallback(like: CostsLike) -> tuple[StackCosts, str]:
    """What a (stack, family) with no fit rows left is priced with where the stack's default entry names
    another stack's entry (``like:``): that entry's costs."""
    like_stack, like_family = like.like.split("/")
    return load_stack(like_stack).costs(like_family), f"the stack's like: {like.like}"


def other_engines(
    fits: Mapping[tuple[str, str], list[tuple[ValidationRow, BaseTimes]]], stack: str, family: str, held: set[str]
) -> tuple[list[tuple[ValidationRow, BaseTimes]], str]:
    """The kept fit rows of every other stack on ``family`` (each once), or on every family where none is
    left there (or for a ``default`` entry): what an engine with no rows of its own left takes the chip's share
    of its gap per op from. Its own kernels per op are its code's (its prior); what every engine pays per op
    beyond its own count (graph replay, small-batch kernels, the device model's miss) is the chip family's."""
    for fam in (family, DEFAULT_FAMILY) if family != DEFAULT_FAMILY else (DEFAULT_FAMILY,):
        rows = [
            (r, b)
            for (s, f), pairs in sorted(fits.items())
            if f == fam and s != stack
            for r, b in pairs
            if r.id not in held
        ]
        if rows:
            return rows, f"{len(rows)} fit rows on {family if fam == family else 'every family'}"
    return [], "no engine's rows (none left anywhere)"


def _stack_kept(
    fits: Mapping[tuple[str, str], list[tuple[ValidationRow, BaseTimes]]], stack: str, held: set[str]
) -> bool:
    """Whether any fit row of the stack is left (its pooled default then prices a family left without rows)."""
    return any(r.id not in held for r, _ in fits.get((stack, DEFAULT_FAMILY), []))


def _counted(stacks: set[str]) -> dict[str, float] | None:
    """Each engine's prior kernels per op (``op_kernels``), or None where one of them states none."""
    priors = {s: load_stack(s).op_kernels for s in sorted(stacks)}
    return {s: p.value for s, p in priors.items() if p is not None} if all(priors.values()) else None


def _per_op_fallback(
    entry: StackCosts, rows: list[tuple[ValidationRow, BaseTimes]], where: str, stack: str, own: bool = False
) -> tuple[StackCosts, str]:
    """An entry with no fit rows of its own left, priced with a law per op of the step (no fixed step time): in
    kernels of the chip's cost per captured kernel node where the rows' chips state one, so the time per op
    follows the priced chip's generation, else in µs per op launch. On the engine's ``own`` rows of its other
    families: their fit. On other engines' rows, where every engine states its prior: the engine's own kernels
    per op (``op_kernels``, its code's) plus what the other engines pay per op beyond their own counts (the
    chip's and the device model's share, ``fit_per_op(counted=...)``), and its own request time (``request_ms``:
    the front end's, no chip's); else their pooled law. With no rows at all, the engine's priors alone (no
    request time where it states none). The source says the constants were borrowed, so intervals count the
    entry unfitted; with no rows, that they are the priors alone (intervals count it ``prior``)."""
    per_kernel = any(b.kernel_us > 0 for _, b in rows)
    profile = load_stack(stack)
    prior, request = profile.op_kernels, profile.request_ms
    if not rows and prior is not None:
        # no row of any engine behind it: the intervals count it apart (``catalog.host_basis.HOST_PRIOR``)
        source = f"priors alone: the engine's prior, {prior.value:g} kernels per op ({prior.source})"
        request_source = f"priors alone: the engine's prior ({request.source})" if request else source
        costs = entry.model_copy(
            update={
                "step_overhead_us": Sourced(value=0.0, source=source),
                "step_op_us": None,
                "step_kernels": Sourced(value=prior.value, source=source),
                "request_overhead_ms": Sourced(value=request.value if request else 0.0, source=request_source),
            }
        )
        what = f"{where}: the engine's prior, {prior.value:g} kernels per op x the chip's graph_task_us"
        return costs, f"{what}, {request.value:g} ms/request" if request else f"{what} (no request time)"
    counted = _counted({r.stack for r, _ in rows}) if per_kernel and prior is not None and not own else None
    fit = fit_per_op(rows, per_kernel=per_kernel, counted=counted)
    op_value, request_ms = fit.op_us, fit.request_overhead_ms
    whose = "the engine's own" if own else "the other engines'"
    what = f"{whose} law per op of the step, {where}"
    if counted is not None and prior is not None:
        op_value = max(prior.value + fit.op_us, 0.0)
        request_ms = request.value if request else request_ms
        what = (
            f"the engine's prior, {prior.value:g} kernels per op, {fit.op_us:+.2f} per op the other engines pay "
            f"beyond their own priors ({where}), and {'its prior' if request else 'their'} request time"
        )
    source = f"borrowed: {what}"
    per_op = Sourced(value=op_value, source=source)
    costs = entry.model_copy(
        update={
            "step_overhead_us": Sourced(value=0.0, source=source),
            "step_op_us": None if per_kernel else per_op,
            "step_kernels": per_op if per_kernel else None,
            "request_overhead_ms": Sourced(value=request_ms, source=source),
        }
    )
    unit = "kernels per op x the chip's graph_task_us" if per_kernel else "µs per op launch"
    return costs, f"{what} ({op_value:.2f} {unit}, {request_ms:.1f} ms/request)"


def own_rows(
    fits: Mapping[tuple[str, str], list[tuple[ValidationRow, BaseTimes]]], stack: str, held: set[str]
) -> tuple[list[tuple[ValidationRow, BaseTimes]], str]:
    """The stack's own kept fit rows on every family (its pooled entry's), for a family left without rows."""
    rows = [(r, b) for r, b in fits.get((stack, DEFAULT_FAMILY), []) if r.id not in held]
    return rows, f"{len(rows)} fit rows on its other families"


def _with_fit(entry: StackCosts, step_us: float, request_ms: float, source: str) -> StackCosts:
    return entry.model_copy(
        update={
            "step_overhead_us": Sourced(value=step_us, source=source),
            "request_overhead_ms": Sourced(value=request_ms, source=source),
        }
    )


def refit(
    fits: Mapping[tuple[str, str], list[tuple[ValidationRow, BaseTimes]]],
    held: set[str],
    op_fits: Mapping[tuple[str, str], list[ValidationRow]] | None = None,
) -> Refit:
    """The stack constants refitted without the ``held`` row ids (entries none of whose rows are held keep
    their catalog values). A stack's pooled ``default`` entry is refitted first, so a family left without rows
    falls back to it; where the stack has no rows left at all, each of its entries is priced with its own priors
    and the other engines' excess per op over theirs (``other_engines``, ``_per_op_fallback``). Then a family's
    own cost per op of its captured graph (``op_fits``: the rows each was fitted on) is refitted without the
    held rows under those host times, or dropped where none is left."""
    overrides: Overrides = {}
    notes = []
    order = sorted(fits.items(), key=lambda kv: (kv[0][1] != DEFAULT_FAMILY, kv[0]))
    for (stack, family), pairs in order:
        entry = _fitted_entry(stack, family)
        kept = [(r, b) for r, b in pairs if r.id not in held]
        if entry is None or len(kept) == len(pairs):
            continue
        if kept:
            fit = fit_group(kept)
            source = f"hold-out refit on {len(kept)} of {len(pairs)} fit rows"
            overrides[(stack, family)] = _with_fit(entry, fit.step_overhead_us, fit.request_overhead_ms, source)
            notes.append(
                f"{stack}/{family}: refitted on {len(kept)} of {len(pairs)} fit rows "
                f"({fit.step_overhead_us:.0f} µs/step, {fit.request_overhead_ms:.1f} ms/request)"
            )
            continue
        if family == DEFAULT_FAMILY or not _stack_kept(fits, stack, held):
            found = other_engines(fits, stack, family, held)
            overrides[(stack, family)], note = _per_op_fallback(entry, *found, stack)
            notes.append(f"{stack}/{family}: no fit rows left; falls back to {note}")
            continue
        default = load_stack(stack).families[DEFAULT_FAMILY]
        if not isinstance(default, CostsLike):
            # the engine's own rows on its other families, per kernel of the priced chip: its default entry's
            # pooled offset per step would carry the other generation's cost per kernel
            overrides[(stack, family)], note = _per_op_fallback(entry, *own_rows(fits, stack, held), stack, own=True)
            notes.append(f"{stack}/{family}: no fit rows left; falls back to {note}")
            continue
        costs, what = _like_fallback(default)
        # only the fitted constants fall back; kernels and the hand-off stay the family's own. The source says
        # they were borrowed, so the intervals count this (stack, family) as priced without its own fit.
        borrowed = {"source": f"borrowed: {what}"}
        overrides[(stack, family)] = entry.model_copy(
            update={
                "step_overhead_us": costs.step_overhead_us.model_copy(update=borrowed),
                "request_overhead_ms": costs.request_overhead_ms.model_copy(update=borrowed),
                "step_op_us": None if costs.step_op_us is None else costs.step_op_us.model_copy(update=borrowed),
                "step_kernels": None if costs.step_kernels is None else costs.step_kernels.model_copy(update=borrowed),
            }
        )
        notes.append(
            f"{stack}/{family}: no fit rows left; falls back to {what} ({costs.step_overhead_us.value:g} µs/step, "
            f"{costs.request_overhead_ms.value:g} ms/request)"
        )
    for (stack, family), rows in (op_fits or {}).items():
        with overridden_costs(overrides):
            redone = refit_op_launch(stack, family, rows, held)
        if redone is not None:
            overrides[(stack, family)], note = redone
            notes.append(note)
    return Refit(overrides=overrides, notes=tuple(notes))


def with_graph_refit(fitted: Refit, held: set[str]) -> Refit:
    """``fitted`` (the host times refitted without ``held``) with SGLang-on-Ascend's graph cost per op refitted
    without them too (``studies/graph_fit.py``; fitted under the refitted host times), where any of its fit
    rows is held."""
    with overridden_costs(fitted.overrides):
        found = graph_refit(held, GRAPH_STACK)
    if found is None:
        return fitted
    graph, note = found
    overrides = fitted.overrides | {(GRAPH_STACK, GRAPH_ENTRY): graph}
    return Refit(overrides=overrides, notes=(*fitted.notes, note))
