"""Routers of the global scheduler: least-loaded, and a cache-aware prefill choice that sends requests
sharing a prefix block to the instance that served it last unless that instance is much busier."""

from __future__ import annotations

from collections.abc import Sequence


def least_loaded(loads: Sequence[float]) -> int:
    """The least-loaded instance, the lowest-numbered on a tie."""
    return loads.index(min(loads))


class CacheAwareRouter:
    def __init__(self, slack_tokens: float) -> None:
        self.slack = slack_tokens
        self.owner: dict[int, int] = {}

    def choose(self, loads: Sequence[float], prefix: int | None) -> int:
        best = least_loaded(loads)
        if prefix is not None and prefix in self.owner:
            owner = self.owner[prefix]
            if loads[owner] <= loads[best] + self.slack:
                best = owner
        if prefix is not None:
            self.owner[prefix] = best
        return best
