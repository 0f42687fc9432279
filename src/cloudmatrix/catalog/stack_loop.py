"""A serving stack's scheduler loop in time: how its engine fills a co-located step, whether it forms the next
step while the device runs the current one (``stacks.yaml`` ``loop``), the steps a prompt waits at a busy
engine, and the decode steps a handed-off request waits for its first token (``handoff_steps``)."""

from __future__ import annotations

from cloudmatrix.catalog.stacks import DEFAULT_SCHEDULING, Scheduling, load_stack


def stack_scheduling(stack: str | None) -> Scheduling:
    """How a stack's engine fills a co-located step (``DEFAULT_SCHEDULING`` where it states none)."""
    scheduling = None if stack is None else load_stack(stack).defaults.scheduling
    return scheduling or DEFAULT_SCHEDULING


def stack_overlaps(stack: str | None, speculative: bool = False) -> bool:
    """Whether a stack's scheduler forms the next step while the device runs the current one (with draft
    tokens where ``speculative``); False for no stack, or one whose loop is not stated."""
    loop = None if stack is None else load_stack(stack).loop
    return loop is not None and loop.overlap and (loop.speculative or not speculative)


def prompt_wait_steps(overlap: bool, recv_interval: int = 1) -> float:
    """Engine steps a prompt that reaches a busy engine waits before the step that starts its prefill, on
    average over when it arrives: the rest of the running step (half of one), the whole step an overlapping
    scheduler has already launched behind it (one), and half the steps between the scheduler's intakes where
    it polls every ``recv_interval`` steps (SGLang's --scheduler-recv-interval). The one definition the
    estimate, the host-time fit and the simulation's check share (the simulation runs the mechanism)."""
    return 0.5 + (1.0 if overlap else 0.0) + (recv_interval - 1) / 2


def handoff_intake_steps(stack: str | None) -> float:
    """Decode steps from a generation-only request's intake to its first token on a busy decode engine: the
    intake wait (``prompt_wait_steps``) plus the stack's ``handoff_steps``; 0 where the stack states none."""
    steps = None if stack is None else load_stack(stack).handoff_steps
    return 0.0 if steps is None else prompt_wait_steps(stack_overlaps(stack)) + steps.value
