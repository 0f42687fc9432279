"""How an engine's scheduler fills one co-located step with its token budget (catalog/stacks.py ``Scheduling``):
the prompt tokens the step may take and whether the running batch decodes in it. Clock-free: the simulation's
aggregated instances (sim/aggregated.py) ask it once per step."""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.catalog.stacks import Scheduling


@dataclass(frozen=True)
class StepShare:
    prompt_tokens: int  # prompt tokens the step may prefill (FIFO over the prompts in progress)
    decodes: bool  # whether the running batch decodes in the step


def share_step(policy: Scheduling, budget: int, decode_tokens: int, prompts_pending: bool) -> StepShare:
    """The step's split of ``budget`` (tokens per engine step) between ``decode_tokens`` (the running batch's
    tokens, drafts included) and prompts, when prompts are (``prompts_pending``) or are not waiting to run.

    - ``chunk-beside-decode``: the whole batch decodes and prompts take the whole budget beside it.
    - ``mixed``: decodes first, prompts take what they leave (vLLM, TensorRT-LLM); a batch that fills the
      budget on its own leaves the prompts nothing until sequences finish.
    - ``prefill-first``: a step with prompts pending prefills the whole budget and decodes nothing; the batch
      decodes only in steps with no prompt to run (SGLang)."""
    if policy == "prefill-first":
        return StepShare(budget, False) if prompts_pending else StepShare(0, True)
    if policy == "mixed":
        return StepShare(max(budget - decode_tokens, 0), True)
    return StepShare(budget, True)
