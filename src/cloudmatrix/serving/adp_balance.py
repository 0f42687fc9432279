"""TensorRT-LLM's attention-DP balance (``attention_dp_config: enable_balance: true``): with attention data-
parallel over R ranks, each rank prefills its own prompts, and a rank that prefills alone stalls the others'
decode at the MoE's collective. So the scheduler holds new prompts (TensorRT-LLM _torch/pyexecutor
``_balance_adp_requests``, evaluated once per iteration):
- while some rank has no prompt waiting, the prompts wait, for at most ``timeout_iters`` iterations (the count
  runs whether or not any prompt waits, and restarts at the timeout, or at once where some rank has no
  running sequence);
- once every rank has one and every rank decodes, they wait ``batching_wait_iters`` iterations more, so more
  prompts join the batch; then they all start.
At low load (few arrivals per iteration, as 32-128 clients of 1K-token answers give) prompts wait for the
timeout: on average half of it, tens of decode steps, and that is most of such a run's TTFT. Which rank a
prompt joins is not modelled: the ranks' router spreads new requests over the ranks with the fewest, so
``waiting`` prompts are taken as held on ``min(waiting, ranks)`` ranks."""

from __future__ import annotations


class AttentionDpGate:
    def __init__(self, ranks: int, timeout_iters: int, batching_wait_iters: int) -> None:
        self.ranks, self.timeout, self.batching = ranks, timeout_iters, batching_wait_iters
        self.waited = 0  # iterations since some rank had no prompt (TensorRT-LLM's waiting count)
        self.batched = 0  # iterations every rank had one and they were held to batch (its batching count)

    def holds(self, waiting: int, every_rank_decodes: bool, every_rank_has_room: bool = True) -> bool:
        """One iteration: whether the ``waiting`` prompts are held (the counters advance)."""
        if waiting >= self.ranks and every_rank_has_room:
            self.waited = 0
            if not every_rank_decodes:
                return False
            if self.batched < self.batching:
                self.batched += 1
                return True
            self.batched = 0
            return False
        self.waited += 1
        if self.waited >= self.timeout or not every_rank_decodes:
            self.waited = 0
            return False
        return True

    def idle_iterations(self, steps: int, every_rank_decodes: bool) -> None:
        """``steps`` iterations with no prompt waiting: the waiting count runs on, restarting at the timeout."""
        self.waited = (self.waited + steps) % self.timeout if every_rank_decodes else 0
