"""Prefill batching: FIFO per instance, batches filled up to the instance's token budget (the paper uses
16K tokens per NPU); a prompt larger than the budget runs alone."""

from __future__ import annotations

from collections import deque


class PrefillQueue:
    def __init__(self, budget_tokens: int) -> None:
        self.budget = budget_tokens
        self.queue: deque[tuple[int, int]] = deque()
        self.queued_tokens = 0

    def push(self, rid: int, tokens: int) -> None:
        self.queue.append((rid, tokens))
        self.queued_tokens += tokens

    def remove(self, rid: int) -> bool:
        """Drop a queued request (its client went away); False if it is not queued here."""
        for item in self.queue:
            if item[0] == rid:
                self.queue.remove(item)
                self.queued_tokens -= item[1]
                return True
        return False

    def __len__(self) -> int:
        return len(self.queue)

    def take_batch(self) -> tuple[list[int], int]:
        """``next_batch`` as (its request ids, its prompt tokens)."""
        queue, budget = self.queue, self.budget
        if not queue:
            return [], 0
        rid, total = queue.popleft()  # the first is taken whatever its length
        rids = [rid]
        while queue:
            item = queue.popleft()
            if total + item[1] > budget:  # (the next batch's first: put back)
                queue.appendleft(item)
                break
            rids.append(item[0])
            total += item[1]
        self.queued_tokens -= total
        return rids, total

    def next_batch(self) -> list[tuple[int, int]]:
        batch: list[tuple[int, int]] = []
        total = 0
        while self.queue and (not batch or total + self.queue[0][1] <= self.budget):
            rid, tokens = self.queue.popleft()
            batch.append((rid, tokens))
            total += tokens
        self.queued_tokens -= total
        return batch
